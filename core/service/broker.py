"""What the API and the worker agree on about the broker: the task's name, the queue, and the
Celery configuration for long GPU tasks. Neither side imports the other; both import this."""

from __future__ import annotations

from typing import Any

from core.service.config import Settings

RUN_JOB_TASK = "robustify.run_job"
JOBS_QUEUE = "robustify-jobs"
BROKER_SUBFOLDERS = ("queue", "processed", "control")


def celery_config(settings: Settings) -> dict[str, Any]:
    """Late acks, prefetch 1, one task per child, hard limit < visibility timeout. It only
    describes: the folders a filesystem broker needs are made by make_broker_folders.

    Not reject-on-worker-lost: a job that kills its worker (out of memory) would be redelivered
    forever. A lost job is instead found by the sweep (expired lease) and bounded by attempts.
    """
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": 1,
        "task_time_limit": settings.task_time_limit_seconds,
        "task_default_queue": JOBS_QUEUE,
        "task_routes": {RUN_JOB_TASK: {"queue": JOBS_QUEUE}},
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout_seconds},
        "worker_hijack_root_logger": False,
    }
    if _is_filesystem(settings):
        folder = settings.broker_folder
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            # Without this, kombu keeps its broadcast exchange in a "control" folder in the cwd.
            "control_folder": str(folder / "control"),
        }
    return config


def make_broker_folders(settings: Settings) -> None:
    """Make the folders a filesystem broker reads and writes (nothing for a broker with a
    server): called by whoever starts using the broker, the worker at its start and the API's
    queue."""
    if _is_filesystem(settings):
        for sub in BROKER_SUBFOLDERS:
            (settings.broker_folder / sub).mkdir(parents=True, exist_ok=True)


def _is_filesystem(settings: Settings) -> bool:
    return settings.resolved_broker_url.startswith("filesystem")
