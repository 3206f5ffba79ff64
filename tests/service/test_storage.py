"""The artifact store's interface: atomic puts with a size limit and the right sha256, byte
ranges like slices, stat, list and delete by prefix, and a local copy. Each test runs on the
folder store, on an in-memory store with no folder, and on the S3 store against a real
SeaweedFS server (its puts made of several multipart parts)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from memory_store import MemoryArtifactStore
from seaweed import pending_uploads

from core.service.errors import TooLarge
from core.service.storage import ArtifactStore, LocalArtifactStore
from core.service.storage.s3 import S3ArtifactStore

DATA = bytes(range(256)) * 40  # 10,240 bytes, each position telling where it is


@pytest.fixture(params=["folder", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "folder":
        return LocalArtifactStore(tmp_path / "artifacts")
    if request.param == "s3":
        return request.getfixturevalue("s3_store")
    return MemoryArtifactStore()


def everything_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def assert_holds_nothing(store: ArtifactStore) -> None:
    """No key, and for the folder store not even a temp file, for S3 no pending upload."""
    assert list(store.list_keys()) == []
    if isinstance(store, LocalArtifactStore):
        assert everything_under(store.root) == []
    if isinstance(store, S3ArtifactStore):
        assert pending_uploads(store.client, store.bucket, store.prefix + "/") == []


def read(store: ArtifactStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(store.open_range(key, start, end))


def test_put_stream_returns_the_size_and_sha256_of_what_it_stored(store: ArtifactStore):
    chunks = [DATA[:1000], DATA[1000:5000], DATA[5000:]]

    stored = store.put_stream("models/mdl_1/model", iter(chunks))

    assert stored.key == "models/mdl_1/model"
    assert stored.size_bytes == len(DATA)
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert read(store, "models/mdl_1/model") == DATA


def test_a_put_that_fails_midway_shows_nothing_under_its_key(store: ArtifactStore):
    def broken() -> Iterator[bytes]:
        yield DATA
        assert store.stat("models/mdl_1/model") is None  # nothing visible while writing
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        store.put_stream("models/mdl_1/model", broken())

    assert store.stat("models/mdl_1/model") is None
    assert_holds_nothing(store)


def test_a_failed_overwrite_keeps_the_old_object_whole(store: ArtifactStore):
    store.put_bytes("models/mdl_1/model", b"the first version")

    with pytest.raises(TooLarge):
        store.put_stream("models/mdl_1/model", [b"x" * 100], max_bytes=10)

    assert read(store, "models/mdl_1/model") == b"the first version"


def test_past_the_size_limit_is_too_large_and_leaves_nothing(store: ArtifactStore):
    with pytest.raises(TooLarge, match="limit of 4096 bytes"):
        store.put_stream("datasets/ds_1/data.npz", [DATA[:4000], DATA[4000:8000]], max_bytes=4096)

    assert_holds_nothing(store)


def test_exactly_the_size_limit_is_stored(store: ArtifactStore):
    stored = store.put_stream("datasets/ds_1/data.npz", [DATA[:4096]], max_bytes=4096)
    assert stored.size_bytes == 4096


def test_put_stream_async_stores_an_async_body_and_honours_the_limit(store: ArtifactStore):
    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, len(DATA), 3000):
            yield DATA[offset : offset + 3000]

    stored = asyncio.run(store.put_stream_async("models/mdl_1/model", body()))
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    with pytest.raises(TooLarge):
        asyncio.run(store.put_stream_async("models/mdl_2/model", body(), max_bytes=5000))
    assert list(store.list_keys()) == ["models/mdl_1/model"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None),  # the whole object
        (10, 100),  # inside
        (9000, None),  # open-ended: to the end
        (10_000, 20_000),  # an end past the object stops at its end
        (len(DATA), None),  # a start at the end: nothing
        (50_000, None),  # a start past the end: nothing
        (100, 100),  # an empty span
        (0, len(DATA)),  # exactly the object
    ],
)
def test_open_range_reads_like_a_slice(store: ArtifactStore, start: int, end: int | None):
    store.put_bytes("models/mdl_1/model", DATA)
    assert read(store, "models/mdl_1/model", start, end) == DATA[start:end]


def test_open_range_streams_a_large_object_in_chunks(store: ArtifactStore):
    big = DATA * 300  # 3 MB: more than one chunk
    store.put_bytes("models/mdl_1/model", big)

    chunks = list(store.open_range("models/mdl_1/model", 1, len(big) - 1))

    assert len(chunks) > 1
    assert b"".join(chunks) == big[1:-1]


def test_open_range_of_a_missing_key_fails_at_once(store: ArtifactStore):
    with pytest.raises(FileNotFoundError):
        store.open_range("models/mdl_gone/model")


def test_stat_tells_size_and_time_and_none_for_a_missing_key(store: ArtifactStore):
    before = datetime.now(UTC) - timedelta(seconds=2)
    store.put_bytes("models/mdl_1/model", DATA)

    stat = store.stat("models/mdl_1/model")

    assert stat is not None and stat.size_bytes == len(DATA)
    assert before <= stat.modified <= datetime.now(UTC) + timedelta(seconds=2)
    assert store.stat("models/mdl_2/model") is None
    assert store.stat("models") is None  # a folder of keys is no object
    assert store.exists("models/mdl_1/model") and not store.exists("models/mdl_2/model")


def test_list_keys_and_delete_prefix_act_on_a_prefix_and_what_lies_under_it(
    store: ArtifactStore,
):
    keys = [
        "jobs/job_1/checkpoints/attempt-1/epoch-0001.pt",
        "jobs/job_1/checkpoints/attempt-1/epoch-0001.model",
        "jobs/job_1/checkpoints/attempt-2/epoch-0002.pt",
        "jobs/job_10/checkpoints/attempt-1/epoch-0001.pt",
        "models/mdl_1/model",
    ]
    for key in keys:
        store.put_bytes(key, key.encode())

    assert list(store.list_keys()) == sorted(keys)
    assert list(store.list_keys("jobs/job_1")) == sorted(keys[:3])
    assert list(store.list_keys("models/mdl_1/model")) == ["models/mdl_1/model"]
    assert list(store.list_keys("models/mdl_2")) == []

    store.delete_prefix("jobs/job_1")

    assert list(store.list_keys()) == [keys[3], keys[4]]
    if isinstance(store, LocalArtifactStore):
        assert not (store.root / "jobs" / "job_1").exists()
    store.delete_prefix("jobs/job_1")  # nothing left: still fine


def test_delete_removes_one_key_and_ignores_a_missing_one(store: ArtifactStore):
    store.put_bytes("models/mdl_1/model", b"a")
    store.put_bytes("models/mdl_1/weights", b"b")

    store.delete("models/mdl_1/model")
    store.delete("models/mdl_1/model")

    assert list(store.list_keys("models")) == ["models/mdl_1/weights"]


def test_list_keys_leaves_out_a_write_in_progress(store: ArtifactStore):
    def slow() -> Iterator[bytes]:
        yield b"half"
        assert list(store.list_keys()) == ["models/mdl_1/model"]
        yield b"done"

    store.put_bytes("models/mdl_1/model", b"kept")
    store.put_stream("models/mdl_2/model", slow())
    assert list(store.list_keys()) == ["models/mdl_1/model", "models/mdl_2/model"]


def test_local_copy_yields_a_file_with_the_bytes(store: ArtifactStore):
    store.put_bytes("datasets/ds_1/data.npz", DATA)

    with store.local_copy("datasets/ds_1/data.npz") as path:
        assert path.is_file() and path.read_bytes() == DATA
        assert path.name == "data.npz"  # the suffix, which says how to read it, stays

    with pytest.raises(FileNotFoundError), store.local_copy("datasets/ds_gone/data.npz"):
        pass


def test_copy_to_writes_the_object_into_a_local_file(store: ArtifactStore, tmp_path: Path):
    store.put_bytes("models/mdl_1/model", DATA)
    destination = tmp_path / "job" / "model.pt"
    destination.parent.mkdir()

    store.copy_to("models/mdl_1/model", destination)

    assert destination.read_bytes() == DATA
    with pytest.raises(FileNotFoundError):
        store.copy_to("models/mdl_gone/model", tmp_path / "job" / "other.pt")
    assert not (tmp_path / "job" / "other.pt").exists()


def test_put_file_stores_a_local_file(store: ArtifactStore, tmp_path: Path):
    source = tmp_path / "source.pt"
    source.write_bytes(DATA)

    stored = store.put_file("models/mdl_1/model", source)

    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()
    assert read(store, stored.key) == DATA


@pytest.mark.parametrize(
    "key", ["../outside", "/etc/passwd", "models/../../outside", "models//model", "", "a\\b"]
)
def test_a_key_that_is_not_ours_is_refused(store: ArtifactStore, key: str):
    with pytest.raises(ValueError, match="artifact key"):
        store.put_bytes(key, b"x")
    with pytest.raises(ValueError, match="artifact key"):
        store.stat(key)
    assert_holds_nothing(store)
    if isinstance(store, LocalArtifactStore):
        assert everything_under(store.root.parent) == []  # nothing beside the store either
