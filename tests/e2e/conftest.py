"""The whole service as separate processes: a uvicorn server running api.app.create_app and a
real Celery worker, both configured by ROBUSTIFY_* variables from the Settings under test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The worker tests' harness (process groups, settings as environment) serves here too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))

from api_server import ApiServer
from worker_harness import WorkerProcess, with_private_queue, worker_settings

from core.service.config import Settings


@pytest.fixture(params=["embedded", "production"])
def service_settings(request: pytest.FixtureRequest) -> Settings:
    """The embedded configuration, then PostgreSQL + Redis; migrated by the shared fixtures."""
    settings = request.getfixturevalue(f"{request.param}_settings")
    if request.param == "production":
        settings = with_private_queue(settings)
    return worker_settings(settings)


@pytest.fixture()
def running_service(
    service_settings: Settings, tmp_path: Path
) -> Iterator[tuple[ApiServer, WorkerProcess]]:
    """The API server and one worker, both up; stopped (process groups and all) at teardown."""
    api = ApiServer(service_settings, tmp_path / "api.log")
    worker = WorkerProcess(service_settings, tmp_path / "worker.log")
    try:
        api.wait_healthy()
        yield api, worker
    finally:
        worker.kill()
        api.stop()
