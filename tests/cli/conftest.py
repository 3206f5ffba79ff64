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
from core.config import Settings

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


# -- a running embedded service (`robustify up` on a free port), one per test module ---------


@pytest.fixture(scope="module")
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
        yield RunningService(service=service, api_key=service.create_api_key("tests"))
    finally:
        assert service.stop() == 0, service.log_tail()


@pytest.fixture(scope="module")
def digits_model_file(tmp_path_factory: pytest.TempPathFactory, pretrained_cnn: nn.Module) -> Path:
    """The clean digits CNN as a user uploads it: a state_dict of builtin:digits_cnn."""
    return save_digits_model(pretrained_cnn, tmp_path_factory.mktemp("models") / "digits-cnn.pt")
