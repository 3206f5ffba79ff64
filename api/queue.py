"""enqueue(job_id): a message that only says "look at job X", sent by the task's name to the
queue of the job's world size (core.service.broker.jobs_queue)."""

from __future__ import annotations

from celery import Celery

from core.service.broker import (
    JOBS_QUEUE,
    RUN_JOB_TASK,
    celery_config,
    jobs_queue,
    make_broker_folders,
)
from core.service.config import Settings


class JobQueue:
    """The API's side of the broker, opened at an edge (create_app, a test's service)."""

    def __init__(self, settings: Settings) -> None:
        # A filesystem broker's folders must exist before the first message is written, which
        # may be before any worker has started.
        make_broker_folders(settings)
        self.celery = Celery("robustify-api")
        self.celery.conf.update(celery_config(settings))

    def enqueue(self, job_id: str, *, world_size: int = 1) -> None:
        """Send the job to the workers that can run `world_size` ranks."""
        self.celery.send_task(RUN_JOB_TASK, args=[job_id], queue=jobs_queue(world_size))

    def depth(self) -> int | None:
        """Messages waiting in the jobs queue, where the broker can tell."""
        try:
            with self.celery.connection_for_write() as connection:
                channel = connection.default_channel
                return int(channel.queue_declare(queue=JOBS_QUEUE, passive=True).message_count)
        except Exception:  # not every transport can tell; the metric is then absent
            return None

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
