"""What only the S3 store has, on a real SeaweedFS server: puts of several multipart parts,
refused or broken ones aborted (no object, no pending upload), bounded memory while streaming,
ranged reads across parts, the sweep of a killed writer's upload, and the choice of the store
by ROBUSTIFY_ARTIFACTS_URL. The interface's shared tests run on it in test_storage.py."""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from seaweed import BUCKET, S3_TEST_PART_BYTES, SeaweedS3, pending_uploads

from core.service.config import Settings
from core.service.errors import TooLarge
from core.service.storage import LocalArtifactStore, store_from_settings
from core.service.storage.s3 import S3ArtifactStore

MIB = 1024 * 1024
# 11 MiB whose every 1 MiB block differs: two full parts and a smaller last one.
BIG = b"".join(bytes([block]) * MIB for block in range(11))


def chunks_of(data: bytes, size: int = MIB) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def pending(store: S3ArtifactStore) -> list[str]:
    return pending_uploads(store.client, store.bucket, store.prefix + "/")


def test_a_put_of_several_parts_is_whole_and_reads_back_in_ranges(s3_store: S3ArtifactStore):
    assert len(BIG) > 2 * S3_TEST_PART_BYTES

    stored = s3_store.put_stream("models/mdl_1/model", chunks_of(BIG))

    assert stored.size_bytes == len(BIG)
    assert stored.sha256 == hashlib.sha256(BIG).hexdigest()
    assert pending(s3_store) == []
    head = s3_store.client.head_object(Bucket=BUCKET, Key=f"{s3_store.prefix}/models/mdl_1/model")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    across = (S3_TEST_PART_BYTES - 10, S3_TEST_PART_BYTES + 10)  # spans parts 1 and 2
    assert b"".join(s3_store.open_range("models/mdl_1/model", *across)) == BIG[slice(*across)]
    assert b"".join(s3_store.open_range("models/mdl_1/model", 10 * MIB)) == BIG[10 * MIB :]


def test_past_the_limit_after_a_part_was_sent_aborts_the_upload(s3_store: S3ArtifactStore):
    def body() -> Iterator[bytes]:
        yield BIG[: 6 * MIB]  # one part sent: the multipart upload has begun
        assert pending(s3_store) == [f"{s3_store.prefix}/datasets/ds_1/data.npz"]
        yield BIG[6 * MIB : 8 * MIB]

    with pytest.raises(TooLarge, match=f"limit of {7 * MIB} bytes"):
        s3_store.put_stream("datasets/ds_1/data.npz", body(), max_bytes=7 * MIB)

    assert s3_store.stat("datasets/ds_1/data.npz") is None
    assert list(s3_store.list_keys()) == []
    assert pending(s3_store) == []


def test_a_broken_async_body_aborts_the_upload_and_keeps_the_old_object(
    s3_store: S3ArtifactStore,
):
    s3_store.put_bytes("models/mdl_1/model", b"the first version")

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks_of(BIG[: 7 * MIB]):
            yield chunk
        assert pending(s3_store) != []
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        asyncio.run(s3_store.put_stream_async("models/mdl_1/model", body()))

    assert b"".join(s3_store.open_range("models/mdl_1/model")) == b"the first version"
    assert pending(s3_store) == []


def test_an_async_put_of_several_parts_is_whole(s3_store: S3ArtifactStore):
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks_of(BIG):
            yield chunk

    stored = asyncio.run(s3_store.put_stream_async("models/mdl_1/model", body()))

    assert stored.sha256 == hashlib.sha256(BIG).hexdigest()
    assert b"".join(s3_store.open_range("models/mdl_1/model")) == BIG


def test_a_put_holds_about_one_part_in_memory_not_the_object(s3_store: S3ArtifactStore):
    total = 48 * MIB
    block = bytes(MIB)

    tracemalloc.start()
    try:
        s3_store.put_stream("models/mdl_1/model", (block for _ in range(total // MIB)))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert s3_store.stat("models/mdl_1/model").size_bytes == total  # type: ignore[union-attr]
    # The part being filled, the one in flight and botocore's handling of it: ~15 MiB measured.
    assert peak < 4 * S3_TEST_PART_BYTES < total / 2


def test_sweep_orphans_aborts_a_killed_writers_upload_and_keeps_objects(
    s3_store: S3ArtifactStore,
):
    s3_store.put_bytes("models/mdl_1/model", b"committed")
    object_key = f"{s3_store.prefix}/models/mdl_2/model"
    s3_store.client.create_multipart_upload(Bucket=BUCKET, Key=object_key)  # then killed

    assert s3_store.sweep_orphans(older_than=3600) == []  # young: a live writer may own it
    time.sleep(1.5)
    assert s3_store.sweep_orphans(older_than=1) == ["models/mdl_2/model"]

    assert pending(s3_store) == []
    assert list(s3_store.list_keys()) == ["models/mdl_1/model"]


def test_keys_live_under_the_urls_prefix(s3_store: S3ArtifactStore):
    s3_store.put_bytes("models/mdl_1/model", b"x")

    listed = s3_store.client.list_objects_v2(Bucket=BUCKET, Prefix=s3_store.prefix + "/")

    assert [item["Key"] for item in listed["Contents"]] == [f"{s3_store.prefix}/models/mdl_1/model"]


def test_an_s3_url_in_the_settings_picks_the_s3_store(
    seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch
):
    # The credentials and region come the standard way, the AWS_* variables.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("AWS_REGION", seaweedfs.region)
    monkeypatch.setenv("ROBUSTIFY_ARTIFACTS_URL", f"s3://{BUCKET}/from-settings/deployment")
    monkeypatch.setenv("ROBUSTIFY_S3_ENDPOINT_URL", seaweedfs.endpoint_url)

    store = store_from_settings(Settings())

    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix) == (BUCKET, "from-settings/deployment")
    store.put_bytes("models/mdl_1/model", b"through the settings")
    raw = seaweedfs.client().get_object(
        Bucket=BUCKET, Key="from-settings/deployment/models/mdl_1/model"
    )
    assert raw["Body"].read() == b"through the settings"
    store.delete_prefix("models")


def test_the_region_is_aws_region_which_boto3_alone_ignores(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    settings = Settings(artifacts_url=f"s3://{BUCKET}/x", s3_endpoint_url="http://127.0.0.1:1")
    assert settings.aws_region == "eu-west-3"  # read at the edge, with the other settings

    store = store_from_settings(settings)

    assert isinstance(store, S3ArtifactStore) and store.client.meta.region_name == "eu-west-3"


def test_the_store_takes_its_region_from_the_settings_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    settings = Settings(
        artifacts_url=f"s3://{BUCKET}/x",
        s3_endpoint_url="http://127.0.0.1:1",
        aws_region="ap-south-1",
    )

    store = store_from_settings(settings)

    assert isinstance(store, S3ArtifactStore) and store.client.meta.region_name == "ap-south-1"


def test_a_folder_url_picks_the_folder_store(tmp_path: Path):
    for url in (str(tmp_path / "arts"), f"file://{tmp_path / 'arts'}"):
        store = store_from_settings(Settings(data_dir=tmp_path, artifacts_url=url))
        assert isinstance(store, LocalArtifactStore) and store.root == tmp_path / "arts"
    default = store_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(default, LocalArtifactStore) and default.root == tmp_path / "artifacts"


@pytest.mark.parametrize("url", ["https://bucket.example.com/prefix", "gs://bucket", "s3:///x"])
def test_an_artifacts_url_neither_s3_nor_a_folder_is_refused_at_startup(url: str):
    with pytest.raises(ValidationError, match="ROBUSTIFY_ARTIFACTS_URL"):
        Settings(artifacts_url=url)
