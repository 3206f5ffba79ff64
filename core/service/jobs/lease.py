"""The lease a worker holds on the job it runs: a thread renews it every heartbeat and notices
cancel requests, off the hot loop, so the run need not ask the database between messages."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from core.service.config import Settings
from core.service.jobs import lifecycle
from core.service.logs import job_context

log = logging.getLogger(__name__)


class JobStopped(Exception):
    """The job was cancelled, or this worker lost its lease: stop without a result."""


class LeaseKeeper(threading.Thread):
    """Renews the job's lease every heartbeat and notices cancel requests, off the hot loop."""

    def __init__(
        self, factory: sessionmaker[Session], job_id: str, *, worker_id: str, settings: Settings
    ) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.factory, self.job_id, self.worker_id, self.settings = (
            factory,
            job_id,
            worker_id,
            settings,
        )
        self.done = threading.Event()
        self.cancel_requested = False
        self.lost = False

    def run(self) -> None:
        with job_context(self.job_id):
            self._beat_until_done()

    def _beat_until_done(self) -> None:
        while not self.done.wait(self.settings.heartbeat_seconds):
            try:
                ours, cancel = lifecycle.heartbeat(
                    self.factory,
                    self.job_id,
                    worker_id=self.worker_id,
                    lease_seconds=self.settings.lease_seconds,
                )
            except Exception:  # a database blip must not kill the job; the next beat retries
                log.exception("job %s: heartbeat failed", self.job_id)
                continue
            self.cancel_requested |= cancel
            self.lost |= not ours

    def should_stop(self) -> bool:
        return self.cancel_requested or self.lost

    def stop(self) -> None:
        """End the heartbeats and wait for the thread."""
        self.done.set()
        self.join()
