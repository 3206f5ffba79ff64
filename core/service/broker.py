"""What the API and the worker agree on about the broker: the task's name, the queues, and the
Celery configuration for long GPU tasks. Neither side imports the other; both import this.

A job that asks for N ranks (resources.world_size) goes to the queue for N; a worker that can run
M ranks consumes the queues for every N <= M, so a job waits for a worker with enough devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.service.config import Settings

RUN_JOB_TASK = "robustify.run_job"
JOBS_QUEUE = "robustify-jobs"
BROKER_SUBFOLDERS = ("queue", "processed", "control")
MAX_WORLD_SIZE = 64


def jobs_queue(world_size: int = 1) -> str:
    """The queue of the jobs that run across `world_size` processes (1: the original one)."""
    if not 1 <= world_size <= MAX_WORLD_SIZE:
        raise ValueError(f"world_size must be between 1 and {MAX_WORLD_SIZE}, got {world_size}")
    return JOBS_QUEUE if world_size == 1 else f"{JOBS_QUEUE}.ranks.{world_size}"


def worker_world_size(settings: Settings, *, gpus: int) -> int:
    """How many ranks this worker can run one job across: the GPUs it sees (`gpus`, one for a
    worker pinned to cuda:N), or on the CPU settings.worker_processes."""
    device = settings.worker_device
    if device is not None and device.startswith("cuda"):
        return 1 if ":" in device else max(gpus, 1)
    if device is None and gpus:
        return gpus
    return settings.worker_processes


def world_size_of(config: Mapping[str, Any]) -> int:
    """The ranks a job's stored config asks for (resources.world_size; 1 when it says none)."""
    resources = config.get("resources") or {}
    return int(resources.get("world_size") or 1)


def worker_queues(world_size: int) -> list[str]:
    """The queues a worker that can run `world_size` ranks consumes."""
    return [jobs_queue(size) for size in range(1, min(world_size, MAX_WORLD_SIZE) + 1)]


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
