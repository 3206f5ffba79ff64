"""How a job's run ends without a result: cancelled (or left to the worker that took over its
lease), or failed with the code of its error."""

from __future__ import annotations

import logging
from typing import Any

from core.service.errors import Conflict, JobCode, error_body
from core.service.jobs import lifecycle
from core.service.jobs.run_context import JobContext

log = logging.getLogger(__name__)


def end_stopped(context: JobContext, *, pending_progress: dict[str, Any] | None) -> None:
    """End a job told to stop: cancelled, unless this worker lost its lease to another."""
    if context.keeper.lost:
        log.warning("job %s: lease lost; another worker has it", context.job.id)
        return
    try:
        context.finish(
            status=lifecycle.CANCELLED,
            progress={**context.job.progress, **(pending_progress or {})},
            error=error_body(
                JobCode.CANCELLED,
                "cancelled while running; the checkpoints of finished epochs stay downloadable",
            ),
        )
    except Conflict:
        log.warning("job %s: could not record the cancel, lease lost", context.job.id)


def end_failed(context: JobContext, code: str, message: str) -> None:
    log.warning("job %s failed: %s: %s", context.job.id, code, message)
    try:
        context.finish(status=lifecycle.FAILED, error=error_body(code, message))
    except Conflict:
        log.warning("job %s: could not record failure, lease lost", context.job.id)
