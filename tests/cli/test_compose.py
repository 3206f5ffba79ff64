"""docker-compose.yml as a real Compose implementation reads it (`config`), and the image
the Dockerfile builds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) where there is one, else the standalone `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


@pytest.fixture(scope="module")
def compose_config() -> dict[str, Any]:
    """The file as `compose config` resolves and validates it (no Docker engine needed)."""
    command = compose_command()
    if command is None:
        message = "no Compose: `apt-get install docker-compose` (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {name: value for name, value in os.environ.items() if not name.startswith("COMPOSE_")}
    env.pop("POSTGRES_PASSWORD", None)
    completed = subprocess.run(
        [*command, "--file", str(ROOT / "docker-compose.yml"), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return yaml.safe_load(completed.stdout)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target path -> named volume, from the short (v1) or long (v2) syntax."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        found[target] = source
    return found


def test_compose_has_the_services_of_production(compose_config):
    assert {"postgres", "redis", "migrate", "api", "worker"} <= set(compose_config["services"])


def test_api_and_worker_start_after_the_migration_succeeded(compose_config):
    services = compose_config["services"]
    assert services["migrate"]["command"] == ["robustify", "db", "upgrade"]
    for name in ("api", "worker"):
        migrate = services[name]["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully"


def test_worker_reserves_one_nvidia_gpu(compose_config):
    devices = compose_config["services"]["worker"]["deploy"]["resources"]["reservations"]
    assert devices["devices"] == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_api_and_worker_share_the_artifact_volume_at_one_path(compose_config):
    services = compose_config["services"]
    api, worker = services["api"], services["worker"]
    artifacts_dir = api["environment"]["ROBUSTIFY_ARTIFACTS_DIR"]
    assert worker["environment"]["ROBUSTIFY_ARTIFACTS_DIR"] == artifacts_dir
    assert mounts(api)[artifacts_dir] == mounts(worker)[artifacts_dir]
    assert mounts(api)[artifacts_dir] in compose_config["volumes"]


def test_services_point_at_postgres_and_redis(compose_config):
    for name in ("migrate", "api", "worker"):
        environment = compose_config["services"][name]["environment"]
        assert environment["ROBUSTIFY_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in environment["ROBUSTIFY_DATABASE_URL"]
        assert environment["ROBUSTIFY_BROKER_URL"].startswith("redis://redis:6379/")


def test_redis_persists_messages_and_services_have_healthchecks(compose_config):
    services = compose_config["services"]
    assert services["redis"]["command"][-2:] == ["--appendonly", "yes"]
    for name in ("postgres", "redis", "api", "worker"):
        assert services[name]["healthcheck"]["test"], name


def test_the_image_copies_every_package_the_project_installs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        pattern.rstrip("*")
        for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    for package in packages:
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.MULTILINE), package
