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
    expected = {"postgres", "redis", "seaweedfs", "s3-bucket", "migrate", "api", "worker"}
    assert expected <= set(compose_config["services"])


def test_api_and_worker_start_after_the_migration_succeeded(compose_config):
    services = compose_config["services"]
    assert services["migrate"]["command"] == ["robustify", "db", "upgrade"]
    for name in ("api", "worker"):
        migrate = services[name]["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully"


def test_worker_reserves_one_nvidia_gpu(compose_config):
    devices = compose_config["services"]["worker"]["deploy"]["resources"]["reservations"]
    assert devices["devices"] == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_artifacts_are_in_the_s3_service_and_no_volume_is_shared(compose_config):
    services = compose_config["services"]
    api, worker, store = services["api"], services["worker"], services["seaweedfs"]
    for service in (api, worker):
        environment = service["environment"]
        assert environment["ROBUSTIFY_ARTIFACTS_URL"] == "s3://robustify/artifacts"
        assert environment["ROBUSTIFY_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
        assert "ROBUSTIFY_ARTIFACTS_DIR" not in environment
        # The key pair they sign with is the store's one identity.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert environment[name] == store["environment"][name], name
        assert environment["AWS_REGION"]
    assert store["image"].startswith("chrislusf/seaweedfs:")
    assert store["command"][:1] == ["server"] and "-s3" in store["command"]
    assert "artifacts" not in compose_config["volumes"]
    shared = set(mounts(api).values()) & set(mounts(worker).values())
    assert shared == set(), f"api and worker share {shared}"


def test_the_bucket_is_made_before_api_and_worker_start(compose_config):
    services = compose_config["services"]
    bucket = services["s3-bucket"]
    assert bucket["command"] == ["python", "-m", "core.service.storage.bucket"]
    assert bucket["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        made = services[name]["depends_on"]["s3-bucket"]
        assert made["condition"] == "service_completed_successfully"


def test_services_point_at_postgres_and_redis(compose_config):
    for name in ("migrate", "api", "worker"):
        environment = compose_config["services"][name]["environment"]
        assert environment["ROBUSTIFY_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in environment["ROBUSTIFY_DATABASE_URL"]
        assert environment["ROBUSTIFY_BROKER_URL"].startswith("redis://redis:6379/")


def test_redis_persists_messages_and_services_have_healthchecks(compose_config):
    services = compose_config["services"]
    assert services["redis"]["command"][-2:] == ["--appendonly", "yes"]
    for name in ("postgres", "redis", "seaweedfs", "api", "worker"):
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
