"""What survives faults: a worker killed mid-job, a job that kills its worker every time, and a
broker restart that loses the queued messages. Real worker processes, real signals, real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import torch
from torch import nn
from worker_harness import (
    Service,
    WorkerProcess,
    build_service,
    harden_config,
    queued_job_ids,
    torch_threads,
    wait_for,
    worker_settings,
)

from core.service.config import Settings
from core.service.jobs.lifecycle import FAILED, RUNNING, SUCCEEDED, TERMINAL
from core.service.jobs.pipeline import run_job
from core.service.jobs.sweeper import Sweeper


def state_of(service: Service, model_id: str | None) -> dict[str, torch.Tensor]:
    assert model_id is not None
    return service.load(service.model_row(model_id)).state_dict()


RESUMED_EPOCHS = 4
RESUMED_CONFIG = harden_config(epochs=RESUMED_EPOCHS, batch_size=32)


@pytest.fixture(scope="module")
def uninterrupted(
    make_embedded_settings: Callable[[Path], Settings],
    tmp_path_factory: pytest.TempPathFactory,
    pretrained_cnn: nn.Module,
) -> dict[str, torch.Tensor]:
    """The weights of RESUMED_CONFIG's job run uninterrupted, in this process, on as many
    threads as the workers: run once for both configurations below (the same config, seed and
    model; the database and broker hold none of the training)."""
    settings = worker_settings(make_embedded_settings(tmp_path_factory.mktemp("uninterrupted")))
    service = build_service(settings, pretrained_cnn)
    try:
        reference_id = service.create_job(RESUMED_CONFIG, enqueue=False)
        with torch_threads(settings.torch_threads or 1):
            run_job(
                reference_id,
                settings=settings,
                factory=service.context.sessions,
                store=service.context.store,
                worker_id="reference",
            )
        reference = service.job(reference_id)
        assert reference.status == SUCCEEDED, reference.error
        return state_of(service, reference.result_model_id)
    finally:
        service.context.engine.dispose()


def test_killed_worker_resumes_from_last_checkpoint(
    any_service: Service,
    uninterrupted: dict[str, torch.Tensor],
    start_worker: Callable[..., WorkerProcess],
    start_sweeper: Callable[[Service], Sweeper],
) -> None:
    service, epochs = any_service, RESUMED_EPOCHS
    job_id = service.create_job(RESUMED_CONFIG)
    start_sweeper(service)
    first = start_worker(service.settings)
    wait_for(lambda: service.checkpoints(job_id), timeout=240, what="a first checkpoint")

    first.kill()

    epochs_before_kill = len(service.checkpoints(job_id))
    assert 1 <= epochs_before_kill < epochs, "the worker was not killed mid-job"
    assert service.job(job_id).status == RUNNING
    second = start_worker(service.settings)
    job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[first, second])
    assert job.attempts == 2
    events = service.events(job_id)
    assert [event.data["epoch"] for event in events if event.type == "epoch"] == [1, 2, 3, 4]
    assert [event.type for event in events].count("requeued") == 1
    checkpoints = service.checkpoints(job_id)
    assert [checkpoint.epoch for checkpoint in checkpoints] == [1, 2, 3, 4]
    # The epochs before the kill are the first attempt's files; the second resumed after them.
    for checkpoint in checkpoints:
        attempt = 1 if checkpoint.epoch <= epochs_before_kill else 2
        assert f"/attempt-{attempt}/" in checkpoint.storage_key
    resumed = state_of(service, job.result_model_id)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), f"{name} differs from the uninterrupted run"


def test_job_that_kills_its_worker_every_time_fails_after_max_attempts(
    embedded_service: Service,
    start_worker: Callable[..., WorkerProcess],
    start_sweeper: Callable[[Service], Sweeper],
) -> None:
    service = embedded_service
    max_attempts = service.settings.max_attempts
    job_id = service.create_job(harden_config(epochs=4, batch_size=32))
    start_sweeper(service)
    worker = start_worker(service.settings)
    killed: list[int] = []

    def out_of_memory_killer() -> bool:
        # The kernel's OOM killer: whichever pool process holds the job dies, each attempt.
        job = service.job(job_id)
        if job.status == RUNNING and job.attempts > len(killed):
            assert job.worker_id is not None
            pid = int(job.worker_id.rsplit(":", 1)[1])
            assert pid in worker.pool_pids()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return job.status in TERMINAL

    wait_for(out_of_memory_killer, timeout=240, what="the job to end", interval=0.05)

    job = service.job(job_id)
    assert job.status == FAILED and job.attempts == max_attempts == len(killed)
    assert job.error is not None and job.error["code"] == "too_many_attempts"
    assert f"started {max_attempts} times (limit {max_attempts})" in job.error["message"]
    assert "died" in job.error["message"]
    types = [event.type for event in service.events(job_id)]
    assert types.count("started") == max_attempts and types[-1] == "failed"
    assert worker.popen.poll() is None, "the worker itself must live on"


# -- a broker restart -------------------------------------------------------------------------

REDIS_SERVER = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def redis_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@contextmanager
def redis_restarted(client: redis.Redis) -> Iterator[None]:
    """Redis stopped without saving (it keeps nothing on disk here) and started again; it is
    running again when the block ends, whatever happened in it."""
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"])
    try:
        wait_for(lambda: not redis_answers(client), timeout=20, what="Redis to stop")
        subprocess.run(REDIS_SERVER, check=True)
        wait_for(lambda: redis_answers(client), timeout=20, what="Redis to answer PING")
        yield
    finally:
        if not redis_answers(client):
            subprocess.run(REDIS_SERVER, check=False)
            wait_for(lambda: redis_answers(client), timeout=20, what="Redis to answer PING")


def test_queued_jobs_survive_a_broker_restart(
    production_worker_settings: Settings,
    make_service: Callable[[Settings], Service],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = production_worker_settings.model_copy(update={"requeue_queued_after_seconds": 1.0})
    service = make_service(settings)
    assert settings.broker_url is not None
    broker = redis.Redis.from_url(settings.broker_url)
    # One epoch each: what matters here is that each job is sent again and runs once.
    job_ids = [service.create_job(harden_config(epochs=1)) for _ in range(3)]
    assert sorted(queued_job_ids(broker)) == sorted(job_ids)

    with redis_restarted(broker):
        assert queued_job_ids(broker) == [], "the restart should have lost the messages"
        sweeper = Sweeper(service.context.sessions, service.settings, service.queue.enqueue)
        requeued: set[str] = set()

        def sweep() -> bool:
            requeued.update(sweeper.sweep_once())
            return requeued == set(job_ids)

        wait_for(sweep, timeout=20, what="the sweeps to requeue every queued job")
        assert set(queued_job_ids(broker)) == set(job_ids)
        worker = start_worker(service.settings)
        for job_id in job_ids:
            job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])
            assert job.attempts == 1
