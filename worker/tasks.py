"""The one task: a message "look at job X" is a token for X's world size; the worker claims the
fairest queued job of that size (core.service.jobs.dispatch) and runs it; everything else is
core.service.jobs.pipeline.

A job that asks for more ranks than this worker can run (a message the sweeper re-sent to the
single-process queue) is sent on to its own queue instead, untouched.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from celery import Celery

from core.service.broker import RUN_JOB_TASK, jobs_queue, worker_world_size, world_size_of
from core.service.config import Settings
from core.service.logs import job_context
from core.service.sandbox.host import gpu_devices

log = logging.getLogger(__name__)


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register run_job on `app`; each run uses `settings`, the ones the app was built from."""

    @app.task(name=RUN_JOB_TASK)
    def run_job(job_id: str) -> None:
        def send(named_job_id: str, world_size: int) -> None:
            app.send_task(RUN_JOB_TASK, args=[named_job_id], queue=jobs_queue(world_size))

        with job_context(job_id):
            run_in_this_process(job_id, settings, send=send)


def worker_ranks(settings: Settings) -> int:
    """How many ranks this host's worker can run one job across (core.service.broker)."""
    gpus = sum(1 for device in gpu_devices() if device.removeprefix("/dev/nvidia").isdigit())
    return worker_world_size(settings, gpus=gpus)


def run_in_this_process(
    job_id: str, settings: Settings, *, send: Callable[[str, int], None] | None = None
) -> None:
    """Take the message "look at job X" as a token for X's world size: claim the fairest
    queued job of that size (core.service.jobs.dispatch) and run it in this pool process, which
    serves this one task (max_tasks_per_child=1). `send(job_id, world_size)` sends a message:
    X on to its own queue when this worker has too few ranks for it, and the tokens of the
    owner's waiting jobs once a job ends under a running limit."""
    # Imported here, in the pool process. Neither process runs the user's model or touches
    # CUDA: the job's engine is a sandboxed child of the pool process (core.service.jobs.pipeline).
    from core.service.context import ServiceContext
    from core.service.jobs import dispatch

    context = ServiceContext.build(settings)
    try:
        wanted, ranks = _world_size(context, job_id), worker_ranks(settings)
        if wanted > ranks and send is not None:
            log.info("job %s: %d ranks asked, %d here: sent on", job_id, wanted, ranks)
            send(job_id, wanted)
            return
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        job = dispatch.claim_next_job(
            context.sessions,
            world_size=wanted,
            worker_id=worker_id,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            max_running_per_owner=settings.max_running_jobs_per_owner,
        )
        if job is None:
            log.info("message for job %s: no queued job may run now; dropped", job_id)
            return
        from core.service.jobs.pipeline import run_claimed_job

        with job_context(job.id):
            log.info("job %s: picked up by %s (message for %s)", job.id, worker_id, job_id)
            try:
                run_claimed_job(
                    job,
                    settings=settings,
                    factory=context.sessions,
                    store=context.store,
                    worker_id=worker_id,
                )
            finally:
                if settings.max_running_jobs_per_owner is not None and send is not None:
                    _wake_waiting_jobs(context, job.owner_id, send)
    finally:
        context.engine.dispose()


def _world_size(context: Any, job_id: str) -> int:
    from core.service.tables import Job

    with context.sessions() as session:
        job = session.get(Job, job_id)
        return world_size_of(job.config or {}) if job is not None else 1


def _wake_waiting_jobs(context: Any, owner_id: str, send: Callable[[str, int], None]) -> None:
    """Send a token for each world size the owner has jobs waiting in: one of its running
    places is free again, and the tokens that came while it had none were spent."""
    from core.service.jobs import waiting

    try:
        with context.sessions() as session:
            tokens = waiting.wake_tokens(session, owner_id)
        for waiting_job_id, world_size in tokens:
            send(waiting_job_id, world_size)
    except Exception:  # the sweeper re-sends long-queued jobs: a lost token only delays
        log.exception("could not send the tokens of owner %s's waiting jobs", owner_id)
