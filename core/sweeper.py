"""The sweeper: every few seconds, take up jobs whose worker died or whose message was lost.

It runs as a thread beside the API (every API replica may run one: a sweep is a set of
compare-and-set updates, so two sweepers never take up the same job twice).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from core import jobs
from core.config import Settings

log = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, enqueue: Callable[[str], None]
    ) -> None:
        super().__init__(name="robustify-sweeper", daemon=True)
        self.factory, self.settings, self.enqueue = factory, settings, enqueue
        self.stopped = threading.Event()

    def sweep_once(self) -> list[str]:
        job_ids = jobs.sweep(
            self.factory,
            max_attempts=self.settings.max_attempts,
            requeue_queued_after=timedelta(seconds=self.settings.requeue_queued_after_seconds),
        )
        for job_id in job_ids:
            self.enqueue(job_id)
        return job_ids

    def run(self) -> None:
        while not self.stopped.wait(self.settings.sweep_interval_seconds):
            try:
                self.sweep_once()
            except Exception:  # the database or broker may be down for a moment; try again
                log.exception("sweep failed")

    def stop(self) -> None:
        self.stopped.set()
        self.join()
