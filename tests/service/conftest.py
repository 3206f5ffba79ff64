"""The service tests' real S3: the session's SeaweedFS server (tests/conftest.py) and its one
bucket; each test's store gets a fresh prefix, so tests never see each other's keys."""

from __future__ import annotations

import secrets

import pytest
from seaweed import BUCKET, S3_TEST_PART_BYTES, SeaweedS3

from core.service.storage.s3 import S3ArtifactStore


@pytest.fixture()
def s3_store(seaweedfs: SeaweedS3) -> S3ArtifactStore:
    """A store on the real server, under a prefix of its own, with the smallest parts."""
    return S3ArtifactStore(
        BUCKET,
        f"tests/{secrets.token_hex(6)}",
        client=seaweedfs.client(),
        part_bytes=S3_TEST_PART_BYTES,
    )
