"""An owner's waiting jobs: which to send a broker token for when one of its running places
frees (a worker's job ended, or the sweep ended a dead worker's), since a token that came while
the owner was at its running limit was spent without a claim (core.service.jobs.dispatch)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.service.jobs.statuses import QUEUED
from core.service.tables import Job


def world_size_column() -> ColumnElement[int]:
    """A job's resources.world_size, read from its stored config (1 when it names none)."""
    return func.coalesce(Job.config[("resources", "world_size")].as_integer(), 1)


def wake_tokens(session: Session, owner_id: str) -> list[tuple[str, int]]:
    """(job id, world size) of the owner's oldest queued job of each world size it has queued:
    one token per queue, since each queue's workers claim only jobs of their own size."""
    world_size = world_size_column().label("world_size")
    rows = session.execute(
        select(Job.id, world_size)
        .where(Job.owner_id == owner_id, Job.status == QUEUED)
        .order_by(Job.created_at, Job.id)
    ).all()
    oldest: dict[int, str] = {}
    for job_id, size in rows:
        oldest.setdefault(int(size), job_id)
    return [(job_id, size) for size, job_id in oldest.items()]
