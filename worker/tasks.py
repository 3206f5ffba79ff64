"""The one task: run a job by id. Everything else is core.service.jobs.pipeline."""

from __future__ import annotations

import logging
import os
import socket

from celery import Celery

from core.service.broker import RUN_JOB_TASK
from core.service.config import Settings
from core.service.logs import job_context

log = logging.getLogger(__name__)


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register run_job on `app`; each run uses `settings`, the ones the app was built from."""

    @app.task(name=RUN_JOB_TASK)
    def run_job(job_id: str) -> None:
        with job_context(job_id):
            run_in_this_process(job_id, settings)


def run_in_this_process(job_id: str, settings: Settings) -> None:
    """Run `job_id` in this pool process, which serves this one task (max_tasks_per_child=1)."""
    # Imported here, in the pool process. Neither process runs the user's model or touches
    # CUDA: the job's engine is a sandboxed child of the pool process (core.service.jobs.pipeline).
    from core.service.context import ServiceContext
    from core.service.jobs import lifecycle

    context = ServiceContext.build(settings)
    try:
        if not lifecycle.may_claim(context.sessions, job_id):
            log.info("job %s: ended or held by a live worker; message dropped", job_id)
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
