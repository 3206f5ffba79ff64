"""The service tests' real S3: one SeaweedFS server for the session (tests/seaweed.py), one
bucket in it; each test's store gets a fresh prefix, so tests never see each other's keys."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from seaweed import BUCKET, S3_TEST_PART_BYTES, SeaweedS3, running_seaweedfs

from core.service.storage.s3 import S3ArtifactStore


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture()
def s3_store(seaweedfs: SeaweedS3) -> S3ArtifactStore:
    """A store on the real server, under a prefix of its own, with the smallest parts."""
    return S3ArtifactStore(
        BUCKET,
        f"tests/{secrets.token_hex(6)}",
        client=seaweedfs.client(),
        part_bytes=S3_TEST_PART_BYTES,
    )
