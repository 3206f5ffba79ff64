"""The artifact store: uploads, checkpoints and hardened models, as files under one folder.

Writes are atomic (a temp file in the same folder, then rename), so a reader never sees half a
file; the folder may be a volume shared by the API and every worker. A full disk is a
StorageFull error and leaves nothing half-written; what a killed writer left behind (a temp
file, an empty folder) is swept away once it is old enough that no live writer can own it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.service.errors import StorageFull, TooLarge

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
# The errors of a store that has no room left: the disk is full, or the quota is spent.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
PART_SUFFIX = ".part"


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    size_bytes: int
    sha256: str


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        """The file behind `key`; keys are ours (never user text), checked all the same."""
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return path

    def put_file(self, key: str, source: Path) -> StoredArtifact:
        with source.open("rb") as handle:
            return self.put_stream(key, iter(lambda: handle.read(CHUNK_BYTES), b""))

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        return self.put_stream(key, [data])

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        """Write `chunks` to `key`, hashing as it goes; TooLarge past `max_bytes` and
        StorageFull when the disk has no room (nothing kept either way)."""
        with _no_room_is_storage_full(key):
            writer = _AtomicWriter(self.path(key), key=key, max_bytes=max_bytes)
            try:
                for chunk in chunks:
                    writer.write(chunk)
                return writer.commit()
            finally:
                writer.discard()

    async def put_async_chunks(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        """As put_stream, for a request body that arrives asynchronously."""
        with _no_room_is_storage_full(key):
            writer = _AtomicWriter(self.path(key), key=key, max_bytes=max_bytes)
            try:
                async for chunk in chunks:
                    writer.write(chunk)
                return writer.commit()
            finally:
                writer.discard()

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file holding `key`'s bytes, for code that needs a file; read it, never
        write it (here it is the stored file itself)."""
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no artifact {key!r}")
        yield path

    def copy_to(self, key: str, destination: Path) -> None:
        """Write `key`'s bytes to the local file `destination` (e.g. into a job folder)."""
        with self.local_copy(key) as source:
            shutil.copyfile(source, destination)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every artifact under `prefix/` (e.g. a job's checkpoints)."""
        folder = self.path(prefix)
        if folder.is_dir():
            # missing_ok: the orphan sweep may take an old temp file or empty folder first.
            for path in sorted(folder.rglob("*"), reverse=True):
                if path.is_dir():
                    _remove_folder(path)
                else:
                    path.unlink(missing_ok=True)
            _remove_folder(folder)

    def sweep_orphans(self, older_than: float) -> list[str]:
        """Remove what killed writers left: temp files (`.part`) and empty folders whose last
        change is more than `older_than` seconds ago. Returns the keys removed.

        A live write touches its temp file with every chunk, so it is never that old; a
        committed artifact (what a database row points to) is never a temp file, and a folder
        holding one is not empty. The store's root and its top-level folders stay."""
        cutoff = time.time() - older_than
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        # Deepest first, so a folder emptied here is judged after its contents.
        for folder, _subfolders, files in sorted(os.walk(self.root), reverse=True):
            here = Path(folder)
            emptied = False
            for name in files:
                path = here / name
                if _is_temp_file(name) and _changed_before(path, cutoff):
                    path.unlink(missing_ok=True)
                    removed.append(path.relative_to(self.root).as_posix())
                    emptied = True
            if here == self.root or here.parent == self.root:
                continue
            # A folder just emptied of old temp files was itself left by a killed writer.
            if (emptied or _changed_before(here, cutoff)) and _remove_folder(here):
                removed.append(here.relative_to(self.root).as_posix() + "/")
        if removed:
            log.info("swept %d orphan(s) from the artifact store", len(removed))
        return removed


@contextmanager
def _no_room_is_storage_full(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        log.error("artifact store full writing %s: %s", key, exc)
        raise StorageFull(
            "the artifact store is full: nothing was stored; free space or raise the "
            "store's quota, then retry"
        ) from exc


def _is_temp_file(name: str) -> bool:
    return name.startswith(".") and name.endswith(PART_SUFFIX)


def _changed_before(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _remove_folder(folder: Path) -> bool:
    """rmdir `folder` if it is (still) empty; False when it is not there or not empty."""
    try:
        folder.rmdir()
    except (FileNotFoundError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) or exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


class _AtomicWriter:
    """Streams into a temp file beside the target, hashing and counting; commit renames it."""

    def __init__(self, target: Path, *, key: str, max_bytes: int | None) -> None:
        fd, temp_name = _make_temp_file(target)
        self.target, self.key, self.max_bytes = target, key, max_bytes
        self.temp = Path(temp_name)
        self.handle: BinaryIO = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise TooLarge(f"the upload is larger than the limit of {self.max_bytes} bytes")
        self.digest.update(chunk)
        self.handle.write(chunk)

    def commit(self) -> StoredArtifact:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.target)
        return StoredArtifact(key=self.key, size_bytes=self.size, sha256=self.digest.hexdigest())

    def discard(self) -> None:
        """Drop the temp file unless it was committed (a no-op after commit)."""
        try:
            self.handle.close()
        except OSError:
            pass  # a full disk fails the close's flush too; the file goes all the same
        finally:
            self.temp.unlink(missing_ok=True)


def _make_temp_file(target: Path) -> tuple[int, str]:
    """A new temp file beside `target`, its folder made if needed."""
    for _attempt in range(3):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            return tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX
            )
        except FileNotFoundError:
            continue  # the orphan sweep took the (old, empty) folder in between: make it again
    raise FileNotFoundError(f"cannot create a temp file in {target.parent}")
