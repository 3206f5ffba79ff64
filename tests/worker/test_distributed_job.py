"""A job across two processes (resources.world_size 2) through real worker processes: a worker
with one rank sends it on to the two-rank queue untouched; a worker with two (CPU, gloo) runs it
under torchrun, its manifest says so, and killed mid-run it resumes from its last checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from worker_harness import Service, WorkerProcess, harden_config, wait_for

from core.service.broker import jobs_queue
from core.service.config import Settings
from core.service.jobs.lifecycle import FAILED, QUEUED, SUCCEEDED
from core.service.jobs.sweeper import Sweeper


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


def two_rank_settings(service: Service) -> Settings:
    return service.settings.model_copy(update={"worker_processes": 2})


def test_a_two_rank_job_runs_under_torchrun_and_its_manifest_says_so(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    job_id = embedded_service.create_job(two_rank_config(epochs=2), enqueue=False)
    embedded_service.queue.enqueue(job_id, world_size=2)
    worker = start_worker(two_rank_settings(embedded_service))

    job = embedded_service.wait_for_job(job_id, statuses={SUCCEEDED, FAILED}, workers=[worker])

    assert job.status == SUCCEEDED, job.error
    assert job.attempts == 1 and job.result_model_id is not None
    assert job.manifest["world_size"] == 2
    # Rank 0 alone reported: each epoch once.
    assert [e.data["epoch"] for e in embedded_service.events(job_id) if e.type == "epoch"] == [1, 2]


def test_a_killed_two_rank_job_resumes_from_its_last_checkpoint_and_finishes(
    embedded_service: Service,
    start_worker: Callable[..., WorkerProcess],
    start_sweeper: Callable[[Service], Sweeper],
) -> None:
    service, settings = embedded_service, two_rank_settings(embedded_service)
    job_id = service.create_job(two_rank_config(epochs=3, batch_size=32), enqueue=False)
    service.queue.enqueue(job_id, world_size=2)
    # It re-sends the job, its lease lost, to the single-process queue: a two-rank worker
    # takes that one too.
    start_sweeper(service)
    first = start_worker(settings)
    wait_for(lambda: service.checkpoints(job_id), timeout=240, what="a first checkpoint")

    first.kill()  # the worker, torchrun and both ranks

    epochs_before_kill = len(service.checkpoints(job_id))
    assert 1 <= epochs_before_kill < 3, "the worker was not killed mid-job"
    second = start_worker(settings)
    job = service.wait_for_job(job_id, statuses={SUCCEEDED, FAILED}, workers=[first, second])
    assert job.status == SUCCEEDED, job.error
    assert job.attempts == 2 and job.manifest["world_size"] == 2
    assert [checkpoint.epoch for checkpoint in service.checkpoints(job_id)] == [1, 2, 3]
    events = service.events(job_id)
    assert [event.data["epoch"] for event in events if event.type == "epoch"] == [1, 2, 3]
