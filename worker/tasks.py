"""The one task: run a job by id. Everything else is core.pipeline."""

from __future__ import annotations

import logging
import os
import socket

from celery import Celery

from core.broker import RUN_JOB_TASK

log = logging.getLogger(__name__)


def register_tasks(app: Celery) -> None:
    @app.task(name=RUN_JOB_TASK)
    def run_job(job_id: str) -> None:
        # Imported in the child process: torch (and CUDA) are never touched in the parent.
        from core.context import ServiceContext
        from core.pipeline import run_job as run_pipeline_job

        context = ServiceContext.build(app.conf.robustify_settings)
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        log.info("job %s: picked up by %s", job_id, worker_id)
        run_pipeline_job(
            job_id,
            settings=context.settings,
            factory=context.sessions,
            store=context.store,
            worker_id=worker_id,
        )
