"""Per-owner limits on what an owner may queue and keep stored (settings max_*_per_owner), each
refusal a LimitReached (429 with Retry-After) whose message names the limit and its value.

Stored bytes are counted from the rows: the owner's models (uploaded and hardened), datasets,
and its jobs' per-epoch checkpoints (the resumable file, plus its weights file beside it,
counted at the size of the job's model: the same network in the same format).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.service.config import Settings
from core.service.errors import StoredBytesLimit, TooLarge, TooManyQueuedJobs
from core.service.jobs.lifecycle import QUEUED
from core.service.tables import Checkpoint, Dataset, Job, Model, Owner

# A queued job waits for a worker (minutes); a full store waits for its owner to delete.
QUEUED_RETRY_AFTER_SECONDS = 30
STORED_RETRY_AFTER_SECONDS = 300


def queued_jobs(session: Session, owner_id: str) -> int:
    count = session.scalar(
        select(func.count()).where(Job.owner_id == owner_id, Job.status == QUEUED)
    )
    return int(count or 0)


def lock_owner(session: Session, owner_id: str) -> None:
    """Lock the owner's row until the caller commits its new job (PostgreSQL; SQLite has one
    writer at a time), so two requests at once cannot both take the owner's last place."""
    session.execute(select(Owner.id).where(Owner.id == owner_id).with_for_update(key_share=True))


def check_may_queue(session: Session, owner_id: str, *, settings: Settings) -> None:
    """Raise TooManyQueuedJobs when the owner already has max_queued_jobs_per_owner queued."""
    limit = settings.max_queued_jobs_per_owner
    if limit is None:
        return
    lock_owner(session, owner_id)
    queued = queued_jobs(session, owner_id)
    if queued >= limit:
        raise TooManyQueuedJobs(
            f"you have {queued} jobs queued and the limit is {limit} "
            "(max_queued_jobs_per_owner): retry when one of them has started, or cancel one",
            retry_after_seconds=QUEUED_RETRY_AFTER_SECONDS,
        )


def stored_bytes(session: Session, owner_id: str) -> int:
    """The bytes the owner's rows hold in the artifact store (see the module's docstring)."""
    models = select(func.coalesce(func.sum(Model.size_bytes), 0)).where(Model.owner_id == owner_id)
    datasets = select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
        Dataset.owner_id == owner_id
    )
    checkpoints = (
        select(
            func.coalesce(func.sum(Checkpoint.size_bytes + func.coalesce(Model.size_bytes, 0)), 0)
        )
        .select_from(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .outerjoin(Model, Model.id == Job.model_id)
        .where(Job.owner_id == owner_id)
    )
    total = 0
    for statement in (models, datasets, checkpoints):
        total += int(session.scalar(statement) or 0)
    return total


def _stored_limit_message(limit: int, used: int) -> str:
    return (
        f"your models, datasets and job results use {used} bytes of the {limit} bytes you may "
        "store (max_stored_bytes_per_owner)"
    )


def check_may_store(session: Session, owner_id: str, *, settings: Settings) -> None:
    """Raise StoredBytesLimit when the owner's stored bytes have reached the limit (a
    hardening job, whose results would add to them, is refused then)."""
    limit = settings.max_stored_bytes_per_owner
    if limit is not None:
        _check_room(limit, stored_bytes(session, owner_id))


def _check_room(limit: int, used: int) -> None:
    if used >= limit:
        raise StoredBytesLimit(
            f"{_stored_limit_message(limit, used)}: delete a model or dataset to make room",
            retry_after_seconds=STORED_RETRY_AFTER_SECONDS,
        )


@dataclass(frozen=True)
class UploadAllowance:
    """The most an upload may be: the upload's own limit (`upload_max_bytes`), or less when the
    owner's stored-bytes limit leaves less room (then `room_message` says so)."""

    max_bytes: int
    upload_max_bytes: int
    room_message: str | None = None

    @contextmanager
    def refusing_past_it(self, *, least_file_bytes: int | None = None) -> Iterator[None]:
        """Turn the upload's TooLarge into StoredBytesLimit when it was the owner's room, not
        the upload's own limit, that the upload passed. `least_file_bytes`, the least the file
        can be by the request's Content-Length, past the upload's own limit keeps it a
        TooLarge (413) naming that limit: no room would have taken it."""
        try:
            yield
        except TooLarge as exc:
            if self.room_message is None:
                raise
            if least_file_bytes is not None and least_file_bytes > self.upload_max_bytes:
                raise TooLarge(
                    f"the upload is larger than the limit of {self.upload_max_bytes} bytes",
                    field=exc.field,
                ) from exc
            raise StoredBytesLimit(
                self.room_message,
                field=exc.field,
                retry_after_seconds=STORED_RETRY_AFTER_SECONDS,
            ) from exc


def upload_allowance(
    factory: sessionmaker[Session], owner_id: str, *, settings: Settings, max_upload_bytes: int
) -> UploadAllowance:
    """How large the owner's next upload may be; StoredBytesLimit when it has no room at all.

    Read before the upload starts: uploads of one owner in flight at once (at most
    upload_slots_per_owner) may together pass the limit by their own sizes."""
    limit = settings.max_stored_bytes_per_owner
    if limit is None:
        return UploadAllowance(max_upload_bytes, max_upload_bytes)
    with factory() as session:
        used = stored_bytes(session, owner_id)
    _check_room(limit, used)
    room = limit - used
    if room >= max_upload_bytes:
        return UploadAllowance(max_upload_bytes, max_upload_bytes)
    return UploadAllowance(
        room,
        max_upload_bytes,
        room_message=f"{_stored_limit_message(limit, used)}: this upload is larger than the "
        f"{room} bytes left; delete a model or dataset to make room",
    )
