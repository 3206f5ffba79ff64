"""The sweeper: every few seconds, take up jobs whose worker died or whose message was lost;
every minute or so, clear the artifact store of what killed uploads and writers left behind.

It runs as a thread beside the API (every API replica may run one: a sweep is a set of
compare-and-set updates, so two sweepers never take up the same job twice, and two orphan
sweeps only ever remove the same old temp files and empty folders).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from core.service.config import Settings
from core.service.jobs import lifecycle
from core.service.storage import ArtifactStore, store_from_settings

log = logging.getLogger(__name__)

# Walking the whole store is dearer than a few UPDATEs: at most this often.
ORPHAN_SWEEP_SECONDS = 60.0


class Sweeper(threading.Thread):
    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        enqueue: Callable[[str], None],
        *,
        store: ArtifactStore | None = None,
    ) -> None:
        super().__init__(name="robustify-sweeper", daemon=True)
        self.factory, self.settings, self.enqueue = factory, settings, enqueue
        self.store = store or store_from_settings(settings)
        self.stopped = threading.Event()
        self.last_orphan_sweep: float | None = None

    def sweep_once(self) -> list[str]:
        job_ids = lifecycle.sweep(
            self.factory,
            max_attempts=self.settings.max_attempts,
            requeue_queued_after=timedelta(seconds=self.settings.requeue_queued_after_seconds),
            max_running_per_owner=self.settings.max_running_jobs_per_owner,
        )
        for job_id in job_ids:
            self.enqueue(job_id)
        return job_ids

    def sweep_orphans(self) -> list[str]:
        """Remove what killed uploads and writers left in the artifact store (partial files,
        empty folders) once older than `orphan_upload_age_seconds`; returns their keys."""
        self.last_orphan_sweep = time.monotonic()
        return self.store.sweep_orphans(older_than=self.settings.orphan_upload_age_seconds)

    def _orphan_sweep_due(self) -> bool:
        return (
            self.last_orphan_sweep is None
            or time.monotonic() - self.last_orphan_sweep >= ORPHAN_SWEEP_SECONDS
        )

    def run(self) -> None:
        while not self.stopped.wait(self.settings.sweep_interval_seconds):
            try:
                self.sweep_once()
            except Exception:  # the database or broker may be down for a moment; try again
                log.exception("sweep failed")
            if self._orphan_sweep_due():
                try:
                    self.sweep_orphans()
                except OSError:  # the store's volume may be away for a moment; try again
                    log.exception("orphan sweep failed")

    def stop(self) -> None:
        self.stopped.set()
        self.join()
