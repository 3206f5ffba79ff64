"""Settings reach the worker from the edge that builds it, never through the environment; the
broker's configuration only describes, the worker's start makes what it needs. No worker
process here: the app is built and its parts called in this process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import cli.service
import worker.celery_app
import worker.tasks
from core.service.broker import RUN_JOB_TASK, celery_config, make_broker_folders
from core.service.config import Settings
from worker.celery_app import make_celery


def test_worker_device_reaches_the_app_without_touching_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.delenv("ROBUSTIFY_WORKER_DEVICE", raising=False)
    monkeypatch.setenv("ROBUSTIFY_DATA_DIR", str(tmp_path))
    built: list[Settings] = []

    class StartedApp:
        def start(self, argv: list[str]) -> int:
            return 0

    def fake_make_celery(settings: Settings) -> StartedApp:
        built.append(settings)
        return StartedApp()

    monkeypatch.setattr(worker.celery_app, "make_celery", fake_make_celery)
    monkeypatch.setattr(cli.service, "configure_logging", lambda settings: None)

    code = cli.service._run_celery_worker(concurrency=1, device="cuda:3", node_name=None)

    assert code == 0
    assert [settings.worker_device for settings in built] == ["cuda:3"]
    assert "ROBUSTIFY_WORKER_DEVICE" not in os.environ


def test_tasks_run_with_the_settings_the_app_was_built_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    settings = Settings(data_dir=tmp_path, worker_device="cuda:1")
    ran: list[tuple[str, Settings]] = []

    def fake_run(job_id: str, given: Settings, **_: object) -> None:
        ran.append((job_id, given))

    monkeypatch.setattr(worker.tasks, "run_in_this_process", fake_run)
    app = make_celery(settings)

    app.tasks[RUN_JOB_TASK].run("job_x")

    assert ran == [("job_x", settings)]


def test_celery_config_describes_the_filesystem_broker_without_making_its_folders(
    tmp_path: Path,
):
    settings = Settings(data_dir=tmp_path)

    config: dict[str, Any] = celery_config(settings)
    make_celery(settings)

    assert config["broker_transport_options"]["data_folder_in"].startswith(str(tmp_path))
    assert not settings.broker_folder.exists()
    make_broker_folders(settings)
    assert sorted(p.name for p in settings.broker_folder.iterdir()) == [
        "control",
        "processed",
        "queue",
    ]


def test_apps_built_one_after_another_leave_one_receiver_of_each_signal(tmp_path: Path) -> None:
    from celery.signals import celeryd_init, setup_logging

    from worker.celery_app import make_celery

    def ours(signal: Any) -> int:
        return sum(1 for _, receiver in signal.receivers if "make_celery" in receiver.__qualname__)

    for index in range(3):
        make_celery(Settings(data_dir=tmp_path / str(index)))

    assert ours(setup_logging) == 1
    assert ours(celeryd_init) == 1
