"""`python -m core.service.storage.bucket`, the deployment's one-shot step that creates the
artifacts' bucket, on a real SeaweedFS server: created once, found the next time, and a
failure (wrong keys, no server) is exit status 1, not a bucket-less deployment starting."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from seaweed import SeaweedS3

from core.service.storage.bucket import ensure_bucket, main
from core.service.storage.s3 import S3ArtifactStore

REPO_ROOT = Path(__file__).resolve().parents[2]


def bucket_names(server: SeaweedS3) -> list[str]:
    return [bucket["Name"] for bucket in server.client().list_buckets()["Buckets"]]


def deployment_environment(server: SeaweedS3, bucket: str) -> dict[str, str]:
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith("AWS_")},
        "ROBUSTIFY_ARTIFACTS_URL": f"s3://{bucket}/robustify",
        "ROBUSTIFY_S3_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": server.region,
    }


def test_ensure_bucket_creates_it_once(seaweedfs: SeaweedS3):
    bucket = f"made-{secrets.token_hex(4)}"
    store = S3ArtifactStore(bucket, "robustify", client=seaweedfs.client())

    assert ensure_bucket(store) is True
    assert ensure_bucket(store) is False
    assert bucket in bucket_names(seaweedfs)
    store.put_bytes("models/mdl_1/model", b"in the new bucket")
    assert list(store.list_keys()) == ["models/mdl_1/model"]


def test_the_module_run_twice_makes_the_bucket_of_the_settings(seaweedfs: SeaweedS3):
    bucket = f"deployed-{secrets.token_hex(4)}"
    env = deployment_environment(seaweedfs, bucket)
    command = [sys.executable, "-m", "core.service.storage.bucket"]

    first = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    second = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)

    assert first.returncode == 0, first.stderr
    assert f"bucket {bucket} created" in first.stderr
    assert second.returncode == 0, second.stderr
    assert f"bucket {bucket} already there" in second.stderr
    assert bucket in bucket_names(seaweedfs)


def test_wrong_keys_or_no_server_exit_1(seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch):
    made, never = f"made-{secrets.token_hex(4)}", f"never-{secrets.token_hex(4)}"
    for name, value in deployment_environment(seaweedfs, made).items():
        monkeypatch.setenv(name, value)
    assert main(timeout_seconds=1) == 0
    # A store built later in the same process signs with the keys the variables hold now.
    monkeypatch.setenv("ROBUSTIFY_ARTIFACTS_URL", f"s3://{never}/robustify")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert main(timeout_seconds=1) == 1

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("ROBUSTIFY_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens
    assert main(timeout_seconds=1) == 1
    assert made in bucket_names(seaweedfs) and never not in bucket_names(seaweedfs)
