"""The installed `robustify` command run as a subprocess, against a fresh SQLite data dir or a
fresh PostgreSQL database, with nothing from the caller's ROBUSTIFY_* environment; and a running
embedded service (`robustify up`) for the SDK and the commands that use it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from service_harness import RunningService, save_digits_model
from sqlalchemy import create_engine, text
from torch import nn

from cli.embedded import EmbeddedService
from core.service.config import Settings

RunRobustify = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def robustify() -> str:
    path = shutil.which("robustify", path=str(Path(sys.executable).parent))
    assert path, "robustify is installed into the venv by `make install`"
    return path


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without ROBUSTIFY_* variables, plus `settings`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ROBUSTIFY_")}
    env.update(settings)
    return env


@pytest.fixture()
def fresh_postgres_url(postgres_database: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (no tables yet), dropped afterwards."""
    name = f"robustify_cli_{secrets.token_hex(4)}"
    admin = create_engine(postgres_database, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_database.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def cli_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of a database that does not exist yet (SQLite) or has no tables (PostgreSQL)."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    return Settings(
        data_dir=tmp_path / "data", database_url=request.getfixturevalue("fresh_postgres_url")
    )


def settings_environment(settings: Settings) -> dict[str, str]:
    env = clean_environment(ROBUSTIFY_DATA_DIR=str(settings.data_dir))
    if settings.database_url is not None:
        env["ROBUSTIFY_DATABASE_URL"] = settings.database_url
    return env


@pytest.fixture()
def run_robustify(robustify: str, cli_settings: Settings) -> RunRobustify:
    """Run `robustify ARGS...` against `cli_settings`; returns the finished process."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [robustify, *args],
            env=settings_environment(cli_settings),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


# -- a running embedded service (`robustify up` on a free port), one for the whole session ----
#
# Started by the first test that asks for it and stopped right after the last one (each start
# imports torch in the API and in the worker, and each stop waits for the worker's warm
# shutdown: seconds each, once instead of once per module). The tests that share it make their
# own models and jobs and look only at those.

_SHARED: list[RunningService] = []
_LAST_USER: list[pytest.Item] = []


def _stop_shared() -> None:
    while _SHARED:
        running = _SHARED.pop()
        assert running.service.stop() == 0, running.service.log_tail()


@pytest.fixture(scope="session")
def running_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    folder = tmp_path_factory.mktemp("service")
    service = EmbeddedService(
        folder / "data",
        log_path=folder / "service.log",
        # One torch thread (two shared cores); a cancel is noticed within a second.
        settings={"ROBUSTIFY_TORCH_THREADS": "1", "ROBUSTIFY_HEARTBEAT_SECONDS": "1"},
    )
    service.start()
    try:
        service.wait_ready()
        running = RunningService(service=service, api_key=service.create_api_key("tests"))
    except BaseException:
        service.stop()
        raise
    _SHARED.append(running)
    try:
        yield running
    finally:
        _stop_shared()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    users = [item for item in items if "running_service" in getattr(item, "fixturenames", ())]
    _LAST_USER[:] = users[-1:]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last test that uses the running service: stop it (and check it stops
    cleanly) then, not at the end of the whole session."""
    if _LAST_USER and item is _LAST_USER[0]:
        _stop_shared()


@pytest.fixture(scope="session")
def digits_model_file(tmp_path_factory: pytest.TempPathFactory, pretrained_cnn: nn.Module) -> Path:
    """The clean digits CNN as a user uploads it: a state_dict of builtin:digits_cnn."""
    return save_digits_model(pretrained_cnn, tmp_path_factory.mktemp("models") / "digits-cnn.pt")


@pytest.fixture(scope="session")
def model_id(running_service: RunningService, digits_model_file: Path) -> str:
    """The digits model uploaded once to the running service, for the tests that use a model
    already uploaded (each upload's check imports torch in a sandboxed child: seconds)."""
    with running_service.client() as client:
        model = client.models.upload(
            digits_model_file,
            input_shape=[1, 8, 8],
            num_classes=10,
            architecture="builtin:digits_cnn",
        )
    return model.id
