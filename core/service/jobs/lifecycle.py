"""A job's life in the database, which is its only truth: create, claim, heartbeat, progress,
events, finish, cancel, and the sweep that takes up jobs whose worker or message was lost.

A broker message only says "look at job X". A worker *claims* the job with a compare-and-set
UPDATE (only one can win), holds it by a lease it renews, and the attempt counter bounds how
often a job that kills its worker is tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    Update,
    and_,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, sessionmaker

from core.service.db import transaction
from core.service.errors import Conflict, JobCode, NotFound, error_body
from core.service.ids import new_id
from core.service.jobs.statuses import CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL
from core.service.jobs.statuses import STATUSES as STATUSES  # re-exported: lifecycle.STATUSES
from core.service.jobs.statuses import SUCCEEDED as SUCCEEDED
from core.service.jobs.waiting import wake_tokens
from core.service.tables import Base, Checkpoint, Job, JobEvent, Owner, utcnow
from core.service.webhooks.outbox import record_job_state

log = logging.getLogger(__name__)


def add_event(
    session: Session, job_id: str, type_: str, message: str, data: dict[str, Any] | None = None
) -> JobEvent:
    event = JobEvent(job_id=job_id, type=type_, message=message, data=data or {})
    session.add(event)
    return event


def create_job(
    session: Session,
    *,
    owner_id: str,
    kind: str,
    model_id: str,
    dataset: str,
    config: dict[str, Any],
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[Job, bool]:
    """A new queued job, or (with an Idempotency-Key seen before) the job it created then.

    Returns (job, created). The same key with a different request is a Conflict.
    """
    if idempotency_key is not None:
        existing = session.scalar(
            select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == idempotency_key)
        )
        if existing is not None:
            check_replay(existing, request_hash)
            return existing, False
    job = Job(
        id=new_id("job"),
        owner_id=owner_id,
        kind=kind,
        status=QUEUED,
        model_id=model_id,
        dataset=dataset,
        config=config,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        progress={},
        metrics={},
        manifest={},
        attempts=0,
        cancel_requested=False,
        enqueued_at=utcnow(),
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "queued", f"{kind} job created")
    record_job_state(session, job)  # the webhooks' outbox, in the change's transaction
    return job, True


def check_replay(job: Job, request_hash: str | None) -> None:
    """A request that reuses the Idempotency-Key that made `job` must be the same request."""
    if job.request_hash != request_hash:
        raise Conflict(
            "this Idempotency-Key was used for a different request", field="Idempotency-Key"
        )


def get_job(session: Session, owner_id: str, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.owner_id != owner_id:
        raise NotFound(f"no job {job_id}")
    return job


def claim_job(
    factory: sessionmaker[Session],
    job_id: str,
    *,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
    max_running_per_owner: int | None = None,
) -> Job | None:
    """Take the job if it is free: queued, or running under an expired lease; with
    `max_running_per_owner`, only while its owner runs fewer other jobs than that.

    None when another worker holds it, it has ended, its owner is at the limit, or it is out
    of attempts (then it is failed here, with an error that says so).
    """
    now = utcnow()
    with transaction(factory) as session:
        claimed = _rows_changed(
            session,
            update(Job)
            .where(
                Job.id == job_id,
                Job.attempts < max_attempts,
                Job.cancel_requested.is_(False),
                or_(Job.status == QUEUED, and_(Job.status == RUNNING, Job.lease_expires_at < now)),
                *_below_running_limit(session, job_id, max_running_per_owner),
            )
            .values(
                status=RUNNING,
                worker_id=worker_id,
                attempts=Job.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=func.coalesce(Job.started_at, now),
                updated_at=now,
            )
            .execution_options(synchronize_session=False),
        )
        job = session.get(Job, job_id)
        if job is None:
            return None
        if claimed == 1:
            session.refresh(job)
            add_event(
                session,
                job_id,
                "started",
                f"attempt {job.attempts} of {max_attempts} on {worker_id}",
                {"attempt": job.attempts, "worker": worker_id},
            )
            record_job_state(session, job)
            return job
        if job.status == QUEUED and job.cancel_requested:
            _finish(
                session,
                job,
                CANCELLED,
                error=error_body(JobCode.CANCELLED, "cancelled before it ran"),
            )
        elif job.status not in TERMINAL and job.attempts >= max_attempts:
            _give_up(session, job, max_attempts)
        return None


def _below_running_limit(
    session: Session, job_id: str, max_running: int | None
) -> list[ColumnElement[bool]]:
    """The claim's condition that the job's owner runs fewer than `max_running` other jobs.

    The owner's row is locked first (PostgreSQL; SQLite runs one writer at a time anyway), so
    the UPDATE's count, read after the lock, sees every claim of that owner made before it:
    two workers can never both take the owner's last free place."""
    if max_running is None:
        return []
    owner_id = session.scalar(select(Job.owner_id).where(Job.id == job_id))
    if owner_id is None:
        return []
    session.execute(select(Owner.id).where(Owner.id == owner_id).with_for_update(key_share=True))
    others = aliased(Job)
    running = (
        select(func.count())
        .select_from(others)
        .where(others.owner_id == owner_id, others.status == RUNNING, others.id != job_id)
        .scalar_subquery()
    )
    return [running < max_running]


def _rows_changed(session: Session, statement: Update) -> int:
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def _give_up(session: Session, job: Job, max_attempts: int) -> None:
    _finish(
        session,
        job,
        FAILED,
        error=error_body(
            JobCode.TOO_MANY_ATTEMPTS,
            f"the job was started {job.attempts} times (limit {max_attempts}) and its worker died "
            "each time without finishing it (killed, or out of memory?); giving up",
        ),
    )


def _finish(
    session: Session, job: Job, status: str, *, error: dict[str, str] | None = None
) -> None:
    job.status = status
    job.error = error
    job.finished_at = utcnow()
    job.lease_expires_at = None
    message = status if error is None else f"{status}: {error['message']}"
    add_event(session, job.id, status, message, {"error": error} if error else {})
    record_job_state(session, job)


def heartbeat(
    factory: sessionmaker[Session], job_id: str, *, worker_id: str, lease_seconds: float
) -> tuple[bool, bool]:
    """Renew the lease. Returns (still ours, cancel requested)."""
    now = utcnow()
    with transaction(factory) as session:
        renewed = _rows_changed(
            session,
            update(Job)
            .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == RUNNING)
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False),
        )
        cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return renewed == 1, bool(cancel)


def cancel_requested(factory: sessionmaker[Session], job_id: str) -> bool:
    """The job's cancel flag alone: a one-column primary-key read, cheap enough to be asked
    before every batch (no ORM object, no write, no lock)."""
    with factory() as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def record_epoch(
    factory: sessionmaker[Session],
    job_id: str,
    *,
    worker_id: str,
    checkpoint: Checkpoint,
    message: str,
) -> dict[str, Any]:
    """An epoch's Checkpoint row, its event and its entry in the job's `metrics.epochs`, in one
    transaction (the unique (job, epoch) makes it once only). Returns the job's new metrics."""
    with transaction(factory) as session:
        job = owned_job(session, job_id, worker_id)
        session.add(checkpoint)
        add_event(session, job_id, "epoch", message, checkpoint.metrics)
        epochs = [e for e in job.metrics.get("epochs", []) if e["epoch"] < checkpoint.epoch]
        # A new dict: the JSON column notices only a changed value, not an edited one.
        job.metrics = {**job.metrics, "epochs": [*epochs, checkpoint.metrics]}
        return job.metrics


def owned_job(session: Session, job_id: str, worker_id: str) -> Job:
    """The job, if this worker still holds it; Conflict otherwise (its lease was taken over)."""
    job = session.get(Job, job_id)
    if job is None or job.worker_id != worker_id or job.status != RUNNING:
        raise Conflict(f"job {job_id} is no longer held by {worker_id}")
    return job


def finish_job(
    factory: sessionmaker[Session],
    job_id: str,
    *,
    worker_id: str,
    status: str,
    error: dict[str, str] | None = None,
    new_rows: Sequence[Base] = (),
    **fields: Any,
) -> None:
    """End a job this worker holds, setting `fields` (metrics, result_model_id, ...).

    `new_rows` (the hardened model's row) are added in the same transaction, so a worker that
    dies, or loses its lease, before the end leaves no half-registered result behind.
    """
    with transaction(factory) as session:
        job = owned_job(session, job_id, worker_id)
        session.add_all(new_rows)
        for name, value in fields.items():
            setattr(job, name, value)
        _finish(session, job, status, error=error)


def request_cancel(session: Session, *, owner_id: str, job_id: str) -> Job:
    """Cancel: a queued job at once; a running one is asked to stop at its next batch."""
    job = get_job(session, owner_id, job_id)
    if job.status in TERMINAL:
        raise Conflict(f"job {job_id} has already ended ({job.status})")
    if job.status == QUEUED:
        job.cancel_requested = True
        _finish(
            session,
            job,
            CANCELLED,
            error=error_body(JobCode.CANCELLED, "cancelled before it ran"),
        )
    elif not job.cancel_requested:
        job.cancel_requested = True
        add_event(
            session, job.id, "cancel_requested", "cancel requested; stopping at the next batch"
        )
    return job


def sweep(
    factory: sessionmaker[Session],
    *,
    max_attempts: int,
    requeue_queued_after: timedelta,
    max_running_per_owner: int | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Find jobs whose worker died (lease expired) or whose message may be lost (queued too
    long); put them back in the queue, or fail those out of attempts. Returns the ids to enqueue.

    A job queued too long whose owner is at `max_running_per_owner` is not sent again: it is
    waiting for its owner's place, and the end of one of the owner's jobs sends its token."""
    now = now or utcnow()
    to_enqueue: list[str] = []
    with transaction(factory) as session:
        # Row locks (PostgreSQL; SQLite locks the whole database anyway): a claim waits for the
        # sweep's verdict instead of being overwritten by it, and a second sweeper skips the
        # rows the first one is taking up rather than enqueueing them twice.
        expired = session.scalars(
            select(Job)
            .where(Job.status == RUNNING, Job.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        ).all()
        for job in expired:
            if job.cancel_requested:
                _finish(
                    session,
                    job,
                    CANCELLED,
                    error=error_body(JobCode.CANCELLED, "cancelled; its worker stopped answering"),
                )
                continue
            if job.attempts >= max_attempts:
                _give_up(session, job, max_attempts)
                continue
            job.status, job.worker_id, job.lease_expires_at = QUEUED, None, None
            job.enqueued_at = now
            add_event(
                session,
                job.id,
                "requeued",
                f"the worker's lease expired during attempt {job.attempts}; queued again",
            )
            record_job_state(session, job)
            to_enqueue.append(job.id)
        # Queued with no attempt left (max_attempts lowered since): no claim may take it, so it
        # would wait forever, counted against its owner's queued limit.
        for job in session.scalars(
            select(Job)
            .where(Job.status == QUEUED, Job.attempts >= max_attempts)
            .with_for_update(skip_locked=True)
        ).all():
            _give_up(session, job, max_attempts)
        stale = session.scalars(
            select(Job)
            .where(
                Job.status == QUEUED,
                Job.enqueued_at < now - requeue_queued_after,
                Job.owner_id.not_in(_owners_at_running_limit(max_running_per_owner)),
            )
            .with_for_update(skip_locked=True)
        ).all()
        for job in stale:
            job.enqueued_at = now
            to_enqueue.append(job.id)
        # A job ended here frees a running place of its owner with no worker left to say so: a
        # token for the owner's oldest waiting job of each world size.
        for owner_id in dict.fromkeys(job.owner_id for job in expired if job.status in TERMINAL):
            for waiting, _world_size in wake_tokens(session, owner_id):
                if waiting not in to_enqueue:
                    to_enqueue.append(waiting)
    if to_enqueue:
        log.info("sweep: re-enqueueing %s", to_enqueue)
    return to_enqueue


def _owners_at_running_limit(max_running: int | None) -> Select[Any]:
    others = aliased(Job)
    owners = select(others.owner_id).where(others.status == RUNNING).group_by(others.owner_id)
    if max_running is None:
        return owners.where(false())
    return owners.having(func.count() >= max_running)
