"""Routing by world size: a job of N ranks goes to N's queue; a worker that can run M ranks
consumes the queues of every N <= M, and counts its GPUs, or its CPU processes, as ranks."""

from __future__ import annotations

import pytest

from core.service.broker import JOBS_QUEUE, jobs_queue, worker_queues, worker_world_size
from core.service.config import Settings


def test_a_single_process_job_keeps_the_original_queue_and_others_get_their_own():
    assert jobs_queue(1) == JOBS_QUEUE
    assert jobs_queue(4) == f"{JOBS_QUEUE}.ranks.4"
    with pytest.raises(ValueError, match="world_size must be between 1 and 64"):
        jobs_queue(0)


def test_a_worker_consumes_every_world_size_up_to_its_ranks():
    assert worker_queues(1) == [JOBS_QUEUE]
    assert worker_queues(3) == [JOBS_QUEUE, jobs_queue(2), jobs_queue(3)]


@pytest.mark.parametrize(
    ("device", "processes", "gpus", "ranks"),
    [
        ("cpu", 1, 8, 1),  # a CPU worker on a GPU host: its processes, not the GPUs
        ("cpu", 2, 0, 2),
        (None, 2, 4, 4),  # the default device on a GPU host: every GPU
        (None, 2, 0, 2),
        ("cuda", 1, 4, 4),
        ("cuda:1", 1, 4, 1),  # pinned to one GPU
    ],
)
def test_a_worker_counts_its_gpus_or_its_cpu_processes_as_ranks(device, processes, gpus, ranks):
    settings = Settings(worker_device=device, worker_processes=processes)
    assert worker_world_size(settings, gpus=gpus) == ranks
