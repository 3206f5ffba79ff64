"""The one task: run a job by id. Everything else is core.service.jobs.pipeline.

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
        def send_on(world_size: int) -> None:
            app.send_task(RUN_JOB_TASK, args=[job_id], queue=jobs_queue(world_size))

        with job_context(job_id):
            run_in_this_process(job_id, settings, send_on=send_on)


def worker_ranks(settings: Settings) -> int:
    """How many ranks this host's worker can run one job across (core.service.broker)."""
    gpus = sum(1 for device in gpu_devices() if device.removeprefix("/dev/nvidia").isdigit())
    return worker_world_size(settings, gpus=gpus)


def run_in_this_process(
    job_id: str, settings: Settings, *, send_on: Callable[[int], None] | None = None
) -> None:
    """Run `job_id` in this pool process, which serves this one task (max_tasks_per_child=1);
    `send_on(world_size)` forwards a job this worker has too few ranks for."""
    # Imported here, in the pool process. Neither process runs the user's model or touches
    # CUDA: the job's engine is a sandboxed child of the pool process (core.service.jobs.pipeline).
    from core.service.context import ServiceContext
    from core.service.jobs import lifecycle

    context = ServiceContext.build(settings)
    try:
        if not lifecycle.may_claim(context.sessions, job_id):
            log.info("job %s: ended or held by a live worker; message dropped", job_id)
            return
        wanted, ranks = _world_size(context, job_id), worker_ranks(settings)
        if wanted > ranks and send_on is not None:
            log.info("job %s: %d ranks asked, %d here: sent on", job_id, wanted, ranks)
            send_on(wanted)
            return
        from core.service.jobs.pipeline import run_job

        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        log.info("job %s: picked up by %s", job_id, worker_id)
        run_job(
            job_id,
            settings=settings,
            factory=context.sessions,
            store=context.store,
            worker_id=worker_id,
        )
    finally:
        context.engine.dispose()


def _world_size(context: Any, job_id: str) -> int:
    from core.service.tables import Job

    with context.sessions() as session:
        job = session.get(Job, job_id)
        return world_size_of(job.config or {}) if job is not None else 1
