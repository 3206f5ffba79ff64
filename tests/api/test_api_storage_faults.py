"""Store faults: a full artifact disk answers 507 `storage_full` and leaves nothing
half-written; the sweeper removes what a killed upload left (its `.part` file, its empty
folder) once it is old, and never a live upload's file or a registered artifact."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from http_checks import assert_error, stored_files, upload_model

from core.service.auth import create_key
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.errors import StorageFull
from core.service.jobs.sweeper import Sweeper
from core.service.storage import ArtifactStore, LocalArtifactStore
from core.service.storage.atomic import AtomicWriter

HOUR = 3600.0


class FullDiskStore(LocalArtifactStore):
    """A store whose disk fills up after `room` bytes: each write past it raises ENOSPC, as
    the kernel's write(2) does (the store's own error handling is what is under test)."""

    def __init__(self, root: Path, *, room: int) -> None:
        super().__init__(root)
        self.room = room

    def _fill(self, chunk: bytes) -> bytes:
        self.room -= len(chunk)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return chunk

    def put_stream(self, key: str, chunks: Any, *, max_bytes: int | None = None) -> Any:
        return super().put_stream(key, (self._fill(c) for c in chunks), max_bytes=max_bytes)

    async def put_stream_async(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None
    ) -> Any:
        async def filling() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                yield self._fill(chunk)

        return await super().put_stream_async(key, filling(), max_bytes=max_bytes)


@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, where this machine lets the test mount one."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def assert_storage_full(response: Any) -> None:
    error = assert_error(response, 507, "storage_full")
    assert "artifact store is full" in error["message"]


def test_a_full_disk_answers_507_and_keeps_nothing(
    app_factory: Callable[..., TestClient], tmpfs: Path
):
    client = app_factory(artifacts_dir=tmpfs)
    with transaction(client.app.state.context.sessions) as session:  # type: ignore[attr-defined]
        key = create_key(session, owner_name="alice").key
    big = tmpfs.parent / "big-model.pt"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    response = upload_model(client, {"Authorization": f"Bearer {key}"}, big)
    assert_storage_full(response)
    assert [path for path in tmpfs.rglob("*") if path.is_file()] == []


def test_a_store_failing_with_enospc_answers_507_and_keeps_nothing(
    app: FastAPI,
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    model_files: dict[str, Path],
):
    full = FullDiskStore(context.store.root, room=1000)
    app.state.context = dataclasses.replace(context, store=full)
    assert_storage_full(upload_model(client, headers, model_files["state_dict"]))
    response = client.post(
        "/v1/datasets", headers=headers, files={"file": ("d.npz", b"\0" * 300_000)}
    )
    assert_storage_full(response)
    assert stored_files(context) == []


@pytest.mark.parametrize("errno_code", [errno.ENOSPC, errno.EDQUOT])
def test_put_file_and_put_stream_turn_no_room_into_storage_full(tmp_path: Path, errno_code: int):
    class NoRoom(LocalArtifactStore):
        def put_stream(self, key: str, chunks: Any, *, max_bytes: int | None = None) -> Any:
            def failing() -> Iterator[bytes]:
                yield b"x" * 10
                raise OSError(errno_code, os.strerror(errno_code))

            return super().put_stream(key, failing(), max_bytes=max_bytes)

    store = NoRoom(tmp_path / "store")
    source = tmp_path / "source"
    source.write_bytes(b"y" * 100)
    with pytest.raises(StorageFull, match="artifact store is full"):
        store.put_file("jobs/job_1/checkpoints/epoch-0001.pt", source)
    with pytest.raises(StorageFull):
        store.put_bytes("models/mdl_1/model", b"z")
    assert [p for p in store.root.rglob("*") if p.is_file()] == []


def test_put_stream_async_on_a_real_full_tmpfs_keeps_nothing(tmpfs: Path):
    store = LocalArtifactStore(tmpfs)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield os.urandom(512 * 1024)

    with pytest.raises(StorageFull):
        asyncio.run(store.put_stream_async("models/mdl_1/model", body()))
    assert [p for p in tmpfs.rglob("*") if p.is_file()] == []


# -- the orphan sweep --------------------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def file_of(store: LocalArtifactStore, key: str) -> Path:
    """Where the folder store keeps `key` (the tests look behind the interface)."""
    return store.root / key


def killed_upload(store: ArtifactStore, key: str) -> Path:
    """What an API killed mid-upload leaves: the temp file beside the key, never committed."""
    assert isinstance(store, LocalArtifactStore)
    writer = AtomicWriter(file_of(store, key), key=key, max_bytes=None)
    writer.write(b"half of a model")
    writer.handle.flush()
    return writer.temp


def test_the_sweep_removes_old_partial_uploads_and_their_empty_folders(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "artifacts")
    old_part = killed_upload(store, "models/mdl_killed/model")
    age(old_part, 2 * HOUR)
    age(old_part.parent, 2 * HOUR)
    empty = file_of(store, "datasets/ds_empty")
    empty.mkdir(parents=True)
    age(empty, 2 * HOUR)
    live_part = killed_upload(store, "models/mdl_live/model")  # written to just now
    kept = store.put_bytes("models/mdl_kept/model", b"registered")
    age(file_of(store, kept.key), 2 * HOUR)
    age(file_of(store, kept.key).parent, 2 * HOUR)
    fresh_empty = file_of(store, "jobs/job_new/checkpoints")
    fresh_empty.mkdir(parents=True)

    removed = store.sweep_orphans(older_than=HOUR)

    assert not old_part.exists() and not old_part.parent.exists()
    assert not empty.exists()
    assert live_part.exists()
    assert file_of(store, kept.key).read_bytes() == b"registered"
    assert fresh_empty.is_dir()
    assert file_of(store, "models").is_dir() and file_of(store, "datasets").is_dir()
    assert sorted(removed) == sorted(
        [
            old_part.relative_to(store.root).as_posix(),
            "models/mdl_killed/",
            "datasets/ds_empty/",
        ]
    )


def test_the_sweeper_thread_sweeps_orphans(embedded_settings: Settings):
    settings = embedded_settings.model_copy(update={"orphan_upload_age_seconds": 60.0})
    context = ServiceContext.build(settings)
    part = killed_upload(context.store, "models/mdl_killed/model")
    age(part, 120)
    sweeper = Sweeper(context.sessions, settings, lambda _job_id: None)
    sweeper.start()
    try:
        deadline = time.monotonic() + 10
        while part.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sweeper.stop()
        context.engine.dispose()
    assert not part.exists() and not part.parent.exists()


def test_a_write_into_a_folder_swept_meanwhile_still_lands(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "artifacts")
    folder = file_of(store, "jobs/job_1/checkpoints/attempt-1")
    folder.mkdir(parents=True)
    age(folder, 2 * HOUR)
    store.sweep_orphans(older_than=HOUR)
    assert not folder.exists()
    stored = store.put_bytes("jobs/job_1/checkpoints/attempt-1/epoch-0001.pt", b"weights")
    assert file_of(store, stored.key).read_bytes() == b"weights"
