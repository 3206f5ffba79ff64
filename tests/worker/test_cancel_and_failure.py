"""Jobs that end without a result: cancelled while queued or while running, and a job whose
training diverges. Each ends with a status and an error that says what happened, and the
checkpoints of its finished epochs stay."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from worker_harness import Service, WorkerProcess, harden_config, wait_for

from core.service import catalog
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.jobs.lifecycle import CANCELLED, FAILED, SUCCEEDED
from core.service.jobs.progress import PROGRESS_SECONDS


def request_cancel(service: Service, job_id: str) -> None:
    with transaction(service.context.sessions) as session:
        lifecycle.request_cancel(session, owner_id=service.owner_id, job_id=job_id)


def assert_checkpoints_kept(service: Service, job_id: str) -> int:
    """Every checkpoint row's files are in the store; the epoch events match the rows."""
    checkpoints = service.checkpoints(job_id)
    for checkpoint in checkpoints:
        assert service.context.store.exists(checkpoint.storage_key)
        assert service.context.store.exists(catalog.checkpoint_model_key(checkpoint))
    epoch_events = [event for event in service.events(job_id) if event.type == "epoch"]
    assert [event.data["epoch"] for event in epoch_events] == [c.epoch for c in checkpoints]
    return len(checkpoints)


def test_cancelled_queued_job_never_runs(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = embedded_service
    job_id = service.create_job(harden_config(epochs=1))

    request_cancel(service, job_id)

    assert service.job(job_id).status == CANCELLED
    # The queue is first in, first out: once the next job is done, the worker has seen the
    # cancelled job's message too.
    next_id = service.create_job(harden_config(epochs=1))
    worker = start_worker(service.settings)
    service.wait_for_job(next_id, statuses={SUCCEEDED}, workers=[worker])
    job = service.job(job_id)
    assert job.status == CANCELLED and job.attempts == 0 and job.started_at is None
    assert job.error == {"code": "cancelled", "message": "cancelled before it ran"}
    assert [event.type for event in service.events(job_id)] == ["queued", "cancelled"]
    assert service.checkpoints(job_id) == []


def global_step(progress: dict[str, Any]) -> int:
    """Batches done since the job's start, from a progress row."""
    return (progress["epoch"] - 1) * progress["steps_per_epoch"] + progress["step"]


def assert_epochs_listed(service: Service, job_id: str) -> None:
    """`metrics.epochs` holds exactly the metrics of the job's checkpointed epochs."""
    job = service.job(job_id)
    assert job.metrics["epochs"] == [c.metrics for c in service.checkpoints(job_id)]


def test_running_job_stops_within_one_batch_of_its_cancel_and_keeps_its_epochs(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service, epochs = embedded_service, 4
    job_id = service.create_job(harden_config(epochs=epochs, batch_size=32))
    worker = start_worker(service.settings)
    wait_for(lambda: service.checkpoints(job_id), timeout=240, what="a first checkpoint")
    (engine,) = wait_for(worker.engine_pids, timeout=10, what="the job's engine process")
    # Frozen, the engine stands at a known batch: the progress row catches up with the last
    # batch it reported within a second, and the cancel is recorded against that step.
    os.kill(engine, signal.SIGSTOP)
    try:
        time.sleep(3 * PROGRESS_SECONDS)
        at_cancel = service.job(job_id).progress
        request_cancel(service, job_id)
    finally:
        os.kill(engine, signal.SIGCONT)

    job = service.wait_for_job(job_id, statuses={CANCELLED}, workers=[worker])

    assert job.error is not None and job.error["code"] == "cancelled"
    assert "cancelled while running" in job.error["message"]
    assert job.result_model_id is None and job.attempts == 1
    # The batch it was running when frozen may end; no other one starts. (Noticed at the next
    # heartbeat instead, 0.5 s here, it would have run dozens more.)
    assert global_step(at_cancel) <= global_step(job.progress) <= global_step(at_cancel) + 1
    assert 1 <= assert_checkpoints_kept(service, job_id) < epochs
    assert_epochs_listed(service, job_id)
    types = [event.type for event in service.events(job_id)]
    assert types.index("cancel_requested") < types.index("cancelled") == len(types) - 1


def test_engine_that_dies_fails_the_job_and_the_worker_lives_on(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = embedded_service
    job_id = service.create_job(harden_config(epochs=4, batch_size=32))
    worker = start_worker(service.settings)
    wait_for(lambda: service.checkpoints(job_id), timeout=240, what="a first checkpoint")
    (engine,) = wait_for(worker.engine_pids, timeout=10, what="the job's engine process")

    os.kill(engine, signal.SIGKILL)  # as the kernel's OOM killer would

    job = service.wait_for_job(job_id, statuses={FAILED}, workers=[worker])
    assert job.error is not None and job.error["code"] == "engine_crashed"
    assert "was killed" in job.error["message"]
    assert job.attempts == 1 and job.result_model_id is None
    assert assert_checkpoints_kept(service, job_id) >= 1
    assert_epochs_listed(service, job_id)
    next_id = service.create_job(harden_config(epochs=1))
    service.wait_for_job(next_id, statuses={SUCCEEDED}, workers=[worker])


def test_diverging_job_fails_with_a_clear_error_and_keeps_its_checkpoints(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = embedded_service
    # Within the API's bounds: the weight decay, stepped at a rate that warms up to 10, makes
    # the weights grow without bound from the second epoch on (epoch 1 still ends finite).
    # Unguarded: with the guards on the run would step back and stop early instead.
    diverging = harden_config(
        epochs=4, peak_lr=10.0, warmup_fraction=0.8, weight_decay=0.03, guards=False
    )
    job_id = service.create_job(diverging)
    worker = start_worker(service.settings)

    job = service.wait_for_job(job_id, statuses={FAILED}, workers=[worker])

    assert job.error is not None and job.error["code"] == "training_diverged"
    message = job.error["message"]
    assert "the training loss became" in message and "lower peak_lr" in message
    assert job.result_model_id is None
    assert assert_checkpoints_kept(service, job_id) >= 1
    assert_epochs_listed(service, job_id)
