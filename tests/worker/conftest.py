"""The worker's real parts as fixtures: `celery -A worker.main worker` processes, the sweeper,
and per configuration an owner with the digits model in its store (see worker_harness)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from torch import nn
from worker_harness import (
    Service,
    WorkerProcess,
    build_service,
    with_private_queue,
    worker_settings,
)

from core.service.config import Settings
from core.service.jobs.sweeper import Sweeper


@pytest.fixture()
def make_service(pretrained_cnn: nn.Module) -> Iterator[Callable[[Settings], Service]]:
    """Builds the Service of a configuration: an owner with an API key and the digits model."""
    built: list[Service] = []

    def make(settings: Settings) -> Service:
        service = build_service(settings, pretrained_cnn)
        built.append(service)
        return service

    yield make
    for service in built:
        service.context.engine.dispose()


@pytest.fixture()
def start_worker(tmp_path: Path) -> Iterator[Callable[[Settings], WorkerProcess]]:
    """Starts real worker processes; every one still running is killed at teardown: a warm
    shutdown of an idle prefork worker spends about 5 s in Celery's own waits, and no test looks
    at how its workers end (`robustify up`'s warm stop of its worker is tested in tests/cli)."""
    started: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{len(started) + 1}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture()
def start_sweeper() -> Iterator[Callable[[Service], Sweeper]]:
    """Runs the sweeper thread the API runs, against a Service's database and queue."""
    started: list[Sweeper] = []

    def start(service: Service) -> Sweeper:
        sweeper = Sweeper(service.context.sessions, service.settings, service.queue.enqueue)
        sweeper.start()
        started.append(sweeper)
        return sweeper

    yield start
    for sweeper in started:
        sweeper.stop()


@pytest.fixture()
def embedded_service(embedded_settings: Settings, make_service: Callable[..., Service]) -> Service:
    return make_service(worker_settings(embedded_settings))


@pytest.fixture()
def production_worker_settings(production_settings: Settings) -> Settings:
    """PostgreSQL + Redis, with a queue of these tests' own (see WORKER_TESTS_REDIS_DB)."""
    return worker_settings(with_private_queue(production_settings))


@pytest.fixture(params=["embedded", "production"])
def any_service(request: pytest.FixtureRequest, make_service: Callable[..., Service]) -> Service:
    """The embedded configuration, then PostgreSQL + Redis."""
    if request.param == "embedded":
        settings = worker_settings(request.getfixturevalue("embedded_settings"))
    else:
        settings = request.getfixturevalue("production_worker_settings")
    return make_service(settings)
