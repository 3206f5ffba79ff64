"""Shared fixtures: the digits data and small models trained on it (real training, seconds),
and the service's real parts: PostgreSQL, Redis, and an S3 store (SeaweedFS, started only by
the sessions that use it)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import torch
from seaweed import BUCKET, S3Artifacts, SeaweedS3, running_seaweedfs
from sqlalchemy import create_engine, text
from torch import nn

from core.robust.datasets.loading import DatasetSplits, load_digits
from core.robust.models.architectures import build_architecture
from core.robust.pretrain import train_clean
from core.service.config import Settings
from core.service.migrate import upgrade_database

# One thread: the tests share two cores with worker and server processes they start.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> DatasetSplits:
    return load_digits()


def make_digits_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_architecture("builtin:digits_cnn", input_shape=(1, 8, 8), num_classes=10)


@pytest.fixture(scope="session")
def pretrained_cnn(digits: DatasetSplits) -> nn.Module:
    """A clean digits CNN (~97% clean accuracy, near 0% under PGD at epsilon 0.2)."""
    return train_clean(make_digits_cnn(), digits.train, epochs=15, seed=0, device="cpu")


@pytest.fixture()
def tiny_cnn(pretrained_cnn: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(pretrained_cnn)


# -- the service's real parts ----------------------------------------------------------------

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_TEST_URL = "redis://127.0.0.1:6379/9"


def fast_lease_settings(**overrides: object) -> Settings:
    """Settings whose leases and sweeps run in seconds, so fault tests finish quickly."""
    values: dict[str, object] = dict(
        heartbeat_seconds=0.5,
        lease_seconds=4.0,
        sweep_interval_seconds=1.0,
        requeue_queued_after_seconds=30.0,
        validation_timeout_seconds=60.0,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def migrated_embedded_settings(folder: Path) -> Settings:
    """The embedded configuration (SQLite, filesystem broker, local artifacts) in `folder`,
    migrated."""
    settings = fast_lease_settings(data_dir=folder / "data")
    upgrade_database(settings)
    return settings


@pytest.fixture()
def embedded_settings(tmp_path: Path) -> Settings:
    """The embedded configuration (SQLite, filesystem broker, local artifacts), migrated."""
    return migrated_embedded_settings(tmp_path)


@pytest.fixture(scope="session")
def make_embedded_settings() -> Callable[[Path], Settings]:
    """migrated_embedded_settings, for fixtures of a wider scope than embedded_settings'."""
    return migrated_embedded_settings


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"robustify_test_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def production_settings(tmp_path: Path, postgres_database: str) -> Iterator[Settings]:
    """PostgreSQL + Redis, as in docker-compose.yml; tables emptied and the queue flushed."""
    settings = fast_lease_settings(
        data_dir=tmp_path / "data", database_url=postgres_database, broker_url=REDIS_TEST_URL
    )
    upgrade_database(settings)
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    yield settings
    engine = create_engine(postgres_database)
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE owners, api_keys, models, datasets, jobs, job_events, "
                "checkpoints RESTART IDENTITY CASCADE"
            )
        )
    engine.dispose()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One real SeaweedFS server (master, volume, filer, S3 gateway) and its bucket for the
    session; started by the first test that asks for it (seconds), none otherwise."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture()
def s3_artifacts(seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> S3Artifacts:
    """A fresh prefix in the server's bucket, so tests never see each other's keys, with the
    server's key pair and region in this process's AWS_* variables: the service's stores built
    here and the API servers and workers a test starts (which inherit them) reach it so."""
    artifacts = S3Artifacts(seaweedfs, prefix=f"tests/{secrets.token_hex(6)}")
    for name, value in artifacts.environment().items():
        monkeypatch.setenv(name, value)
    return artifacts
