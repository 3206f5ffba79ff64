"""Fair dispatch through real worker processes: one owner's backlog does not starve another
owner's one job, and an owner at its running limit waits while another's jobs run on the free
worker. Tiny evaluate jobs on the digits; the order is read from the jobs' rows."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
import redis
from worker_harness import Service, WorkerProcess, harden_config, worker_settings

from core.service.config import Settings
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.jobs.lifecycle import SUCCEEDED
from core.service.tables import Job

# A Redis database of these tests' own: the other worker tests' (11) may be in use at once.
FAIR_DISPATCH_REDIS_DB = 13
EVALUATE_CONFIG = harden_config(epochs=1)
EVALUATE_CONFIG["evaluation"] = {
    **EVALUATE_CONFIG["evaluation"],
    "attack_steps": 2,
    "max_samples": 40,
}


def own_queue(settings: Settings) -> Settings:
    assert settings.broker_url is not None
    url = f"{settings.broker_url.rsplit('/', 1)[0]}/{FAIR_DISPATCH_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return settings.model_copy(update={"broker_url": url})


@pytest.fixture(params=["embedded", "production"])
def fair_settings(request: pytest.FixtureRequest) -> Settings:
    """SQLite + the filesystem broker, then PostgreSQL + Redis (a queue of its own)."""
    if request.param == "embedded":
        return worker_settings(request.getfixturevalue("embedded_settings"))
    return worker_settings(own_queue(request.getfixturevalue("production_settings")))


def queue_evaluations(service: Service, count: int) -> list[str]:
    """`count` evaluate jobs of the service's owner, each announced to the broker."""
    ids = []
    for _ in range(count):
        with transaction(service.context.sessions) as session:
            job, _ = lifecycle.create_job(
                session,
                owner_id=service.owner_id,
                kind="evaluate",
                model_id=service.model.id,
                dataset="builtin:digits",
                config=EVALUATE_CONFIG,
            )
            ids.append(job.id)
        service.queue.enqueue(job.id)
    return ids


def wait_for_all(service: Service, job_ids: list[str], workers: list[WorkerProcess]) -> list[Job]:
    return [
        service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=workers, timeout=180)
        for job_id in job_ids
    ]


def started(job: Job) -> Any:
    assert job.started_at is not None
    return job.started_at


def test_one_owners_backlog_does_not_starve_another_owners_job(
    fair_settings: Settings,
    make_service: Callable[[Settings], Service],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    alice, bob = make_service(fair_settings), make_service(fair_settings)
    backlog = queue_evaluations(alice, 4)
    [bobs] = queue_evaluations(bob, 1)  # queued last

    worker = start_worker(fair_settings)
    jobs = wait_for_all(alice, [*backlog, bobs], [worker])

    order = [job.id for job in sorted(jobs, key=started)]
    assert order.index(bobs) == 1, order  # right after alice's first, not after all of hers
    assert [job_id for job_id in order if job_id != bobs] == backlog


def test_an_owner_at_its_running_limit_waits_while_another_runs(
    fair_settings: Settings,
    make_service: Callable[[Settings], Service],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = fair_settings.model_copy(update={"max_running_jobs_per_owner": 1})
    alice, bob = make_service(settings), make_service(settings)
    hers = queue_evaluations(alice, 3)
    his = queue_evaluations(bob, 2)

    workers = [start_worker(settings), start_worker(settings)]
    jobs = {job.id: job for job in wait_for_all(alice, [*hers, *his], workers)}

    # Never two of alice's at once: each of hers started after the one before it ended.
    spans = sorted((started(jobs[job_id]), jobs[job_id].finished_at) for job_id in hers)
    for (_, ended), (start, _) in pairwise(spans):
        assert ended is not None and start >= ended
    # While one of hers ran, the other worker ran one of bob's: the limit held her back only.
    his_spans = [(started(jobs[job_id]), jobs[job_id].finished_at) for job_id in his]
    assert any(
        start < his_end and his_start < end
        for start, end in spans
        for his_start, his_end in his_spans
    )
