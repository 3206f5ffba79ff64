"""A job across two processes (resources.world_size 2) through real worker processes: a worker
with one rank sends it on to the two-rank queue untouched."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from worker_harness import Service, WorkerProcess, harden_config

from core.service.broker import jobs_queue
from core.service.jobs.lifecycle import QUEUED


def two_rank_config(**hyperparameters: Any) -> dict[str, Any]:
    return {**harden_config(**hyperparameters), "resources": {"world_size": 2}}


def queued_in(service: Service, queue: str) -> int:
    """Messages waiting in `queue` of the filesystem broker (kombu names each file by it)."""
    folder = service.settings.broker_folder / "queue"
    return sum(1 for path in folder.iterdir() if path.name.endswith(f".{queue}.msg"))


def test_a_one_rank_worker_sends_a_two_rank_job_on_to_its_queue(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    # As the sweeper re-sends a job: to the single-process queue.
    job_id = embedded_service.create_job(two_rank_config(epochs=1))
    worker = start_worker(embedded_service.settings)

    deadline = time.monotonic() + 60
    while queued_in(embedded_service, jobs_queue(2)) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)

    assert queued_in(embedded_service, jobs_queue(2)) == 1, worker.log_tail()
    assert embedded_service.job(job_id).status == QUEUED
    assert "2 ranks asked, 1 here: sent on" in worker.log_tail()
