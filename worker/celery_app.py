"""make_celery(settings): the worker's Celery app, configured for long GPU jobs."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging
from kombu import Queue

from core.service.broker import celery_config, make_broker_folders, worker_queues
from core.service.config import Settings
from core.service.logs import configure_logging
from worker.tasks import register_tasks, worker_ranks

log = logging.getLogger(__name__)


def consumed_queues(settings: Settings) -> list[str]:
    """The queues this host's worker takes jobs from: those of every world size up to the ranks
    it can run (its GPUs, or settings.worker_processes on the CPU). Its announcement of how many
    devices it has: a job waits in its world size's queue for a worker that consumes it."""
    return worker_queues(worker_ranks(settings))


def make_celery(settings: Settings) -> Celery:
    """The app `celery -A worker.main worker` runs: late acks, prefetch 1, one task per pool
    process (core.service.broker.celery_config), one pool process by default (one per GPU).
    Its tasks run with `settings`; nothing is read from the environment here."""
    app = Celery("robustify")
    app.conf.update(celery_config(settings))
    queues = consumed_queues(settings)
    app.conf.task_queues = [Queue(name) for name in queues]
    app.conf.update(
        worker_pool="prefork",
        worker_concurrency=1,
        # A lost broker connection must not cancel a running job: the job is guarded by its
        # claim and lease in the database, not by the message.
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )

    def use_our_logging(**_: Any) -> None:
        # With a receiver connected Celery leaves logging alone: JSON lines with the job id,
        # in the worker and in each pool process it forks.
        configure_logging(settings)

    def prepare_broker(instance: Any = None, **_: Any) -> None:
        # The worker that starts makes what its transport needs (a filesystem broker's
        # folders); building the app only describes it.
        if instance is not None and instance.app is app:
            make_broker_folders(settings)
            log.info("this worker runs jobs of up to %d ranks: queues %s", len(queues), queues)

    # Celery's signals are the process's: the app built last replaces an earlier app's
    # receivers instead of adding to them (tests and the CLI build several apps in a process).
    for signal, receiver, uid in (
        (setup_logging, use_our_logging, "robustify.logging"),
        (celeryd_init, prepare_broker, "robustify.broker"),
    ):
        signal.disconnect(dispatch_uid=uid)
        signal.connect(receiver, weak=False, dispatch_uid=uid)
    register_tasks(app, settings)
    return app
