"""The one task: a message "look at job X" is a token for X's world size, spent by
core.service.jobs.pipeline.take_token (the fairest queued job of that size claimed and run, or
the message sent on to X's own queue when this worker has too few ranks for it)."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from core.service.broker import RUN_JOB_TASK, jobs_queue, worker_world_size
from core.service.config import Settings
from core.service.logs import job_context
from core.service.sandbox.host import gpu_devices


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
    job_id: str, settings: Settings, *, send: Callable[[str, int], None]
) -> None:
    """The task's body, in the pool process that serves this one task (max_tasks_per_child=1)."""
    # Imported here, in the pool process: the worker's main process stays light. Neither runs
    # the user's model or touches CUDA: the job's engine is a sandboxed child of the pool process.
    from core.service.jobs.pipeline import take_token

    take_token(job_id, settings, ranks=worker_ranks(settings), send=send)
