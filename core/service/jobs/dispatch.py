"""Fair dispatch: which queued job a worker takes when it takes a broker message.

A message stays a token for its world size's queue ("look at job X" names a job, whose world
size routes it). The worker that takes one claims the *fairest* queued job of that world size,
not necessarily X: the job of the owner with the fewest running jobs (below the running limit),
then of the owner served least recently, then the oldest. One owner's 50 queued jobs then
alternate with another owner's one instead of going first. Every queued job has sent a token,
so there are always as many tokens as jobs to take them; a token spent while every waiting
owner was at its limit is made good by `waiting.wake_tokens` when one of their jobs ends.
"""

from __future__ import annotations

import logging

from sqlalchemy import ColumnElement, and_, case, func, nulls_first, select
from sqlalchemy.orm import Session, sessionmaker

from core.service.jobs import lifecycle
from core.service.jobs.statuses import QUEUED, RUNNING
from core.service.jobs.waiting import world_size_column
from core.service.tables import Job

log = logging.getLogger(__name__)

# Candidates tried per token: each failed try is a job another worker took first, or an owner
# that reached its limit meanwhile.
CLAIM_TRIES = 8


def fairest_queued_job(
    session: Session,
    *,
    world_size: int,
    max_attempts: int,
    max_running_per_owner: int | None,
    passed_jobs: frozenset[str] = frozenset(),
    passed_owners: frozenset[str] = frozenset(),
) -> Job | None:
    """The queued job of `world_size` that should run next, or None: of the owner with the
    fewest running jobs (only owners below `max_running_per_owner`), then of the owner whose
    latest job started longest ago (never: first), then the oldest one waiting.

    Two reads: the fairest owner, its load counted over its jobs once; then its oldest waiting
    job. When another worker claimed that owner's last one in between, the next fairest owner
    is read, so a token is never dropped while another owner's job waits."""
    claimable = and_(
        Job.status == QUEUED,
        Job.cancel_requested.is_(False),
        # One out of attempts is failed by the sweep (lifecycle.sweep), not claimed.
        Job.attempts < max_attempts,
        world_size_column() == world_size,
        Job.id.not_in(passed_jobs),
    )
    passed = set(passed_owners)
    while (
        owner_id := _fairest_owner(session, claimable, max_running_per_owner, passed)
    ) is not None:
        job = session.scalar(
            select(Job)
            .where(claimable, Job.owner_id == owner_id)
            .order_by(Job.created_at, Job.id)
            .limit(1)
        )
        if job is not None:
            return job
        passed.add(owner_id)
    return None


def _fairest_owner(
    session: Session,
    claimable: ColumnElement[bool],
    max_running_per_owner: int | None,
    passed_owners: set[str],
) -> str | None:
    waiting_owners = select(Job.owner_id).where(claimable, Job.owner_id.not_in(passed_owners))
    running = func.sum(case((Job.status == RUNNING, 1), else_=0))
    oldest_waiting = func.min(case((claimable, Job.created_at)))
    owners = (
        select(Job.owner_id)
        .where(Job.owner_id.in_(waiting_owners))
        .group_by(Job.owner_id)
        .order_by(running, nulls_first(func.max(Job.started_at)), oldest_waiting, Job.owner_id)
        .limit(1)
    )
    if max_running_per_owner is not None:
        owners = owners.having(running < max_running_per_owner)
    return session.scalar(owners)


def claim_next_job(
    factory: sessionmaker[Session],
    *,
    world_size: int,
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
    max_running_per_owner: int | None,
) -> Job | None:
    """Claim the fairest queued job of `world_size` for `worker_id`; None when no owner has one
    it may run now. The claim itself is lifecycle.claim_job's compare-and-set (only one worker
    can win a job, its owner's running limit checked under a lock); a candidate lost to another
    worker is passed over and the next fairest one tried."""
    passed_jobs: set[str] = set()
    passed_owners: set[str] = set()
    for _ in range(CLAIM_TRIES):
        with factory() as session:
            candidate = fairest_queued_job(
                session,
                world_size=world_size,
                max_attempts=max_attempts,
                max_running_per_owner=max_running_per_owner,
                passed_jobs=frozenset(passed_jobs),
                passed_owners=frozenset(passed_owners),
            )
            if candidate is None:
                return None
            job_id, owner_id = candidate.id, candidate.owner_id
        job = lifecycle.claim_job(
            factory,
            job_id,
            worker_id=worker_id,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            max_running_per_owner=max_running_per_owner,
        )
        if job is not None:
            return job
        passed_jobs.add(job_id)
        if max_running_per_owner is not None and _running(factory, owner_id) >= (
            max_running_per_owner
        ):
            passed_owners.add(owner_id)
    log.info("no job claimed after %d candidates were taken by others", CLAIM_TRIES)
    return None


def _running(factory: sessionmaker[Session], owner_id: str) -> int:
    with factory() as session:
        count = session.scalar(
            select(func.count()).where(Job.owner_id == owner_id, Job.status == RUNNING)
        )
        return int(count or 0)
