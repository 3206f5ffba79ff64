"""What every phase of a job's run shares: the job's row, the database, the store, the settings
and the lease, and the one way each phase writes the job's row, its events and its end."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.service.config import Settings
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.jobs.lease import JobStopped, LeaseKeeper
from core.service.storage import ArtifactStore
from core.service.tables import Job

log = logging.getLogger(__name__)

Event = tuple[str, str, dict[str, Any]]  # (kind, message, data), as lifecycle.add_event takes


@dataclass
class JobContext:
    """One claimed job while this worker runs it. `job` mirrors the row as this worker wrote
    it; `epochs_done` counts the epochs stored so far (those of earlier attempts included)."""

    job: Job
    settings: Settings
    factory: sessionmaker[Session]
    store: ArtifactStore
    worker_id: str
    keeper: LeaseKeeper
    epochs_done: int = 0
    epochs: int = field(init=False)  # the epochs the job asks for (0 for an evaluation)

    def __post_init__(self) -> None:
        self.epochs = int(self.job.config.get("hyperparameters", {}).get("epochs") or 0)

    def update(self, *, event: Event | None = None, **fields: Any) -> None:
        """Set `fields` on the job's row (and on `job`), with `event`, in one transaction."""
        with transaction(self.factory) as session:
            job = lifecycle.owned_job(session, self.job.id, self.worker_id)
            for name, value in fields.items():
                setattr(job, name, value)
            if event is not None:
                lifecycle.add_event(session, job.id, *event)
        for name, value in fields.items():
            setattr(self.job, name, value)

    def finish(self, *, status: str, **fields: Any) -> None:
        """End the job with `status` (lifecycle.finish_job's fields: metrics, error, ...)."""
        lifecycle.finish_job(
            self.factory, self.job.id, worker_id=self.worker_id, status=status, **fields
        )

    def cancel_requested(self) -> bool:
        """The job's cancel flag as the database has it now (the heartbeat's last look if the
        database cannot be read)."""
        try:
            return lifecycle.cancel_requested(self.factory, self.job.id)
        except SQLAlchemyError:  # a database blip must not fail the job: the heartbeat's look
            log.warning("job %s: could not read the cancel flag", self.job.id, exc_info=True)
            return self.keeper.cancel_requested

    def stop_if_lease_lost(self) -> None:
        if self.keeper.lost:
            raise JobStopped
