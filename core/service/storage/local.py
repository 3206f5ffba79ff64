"""The artifact store as files under one folder (a volume the API and every worker may share).

Writes are atomic (a temp file in the same folder, then rename), so a reader never sees half a
file. A full disk is a StorageFull error and leaves nothing half-written; what a killed writer
left behind (a temp file, an empty folder) is swept away once it is old enough that no live
writer can own it. Paths stay inside this module: callers speak keys and streams.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.service.storage.atomic import AtomicWriter, is_temp_file, no_room_is_storage_full
from core.service.storage.interface import (
    CHUNK_BYTES,
    ArtifactStat,
    ArtifactStore,
    StoredArtifact,
    check_key,
)

log = logging.getLogger(__name__)


class LocalArtifactStore(ArtifactStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str, *, allow_empty: bool = False) -> Path:
        """The file behind `key`; keys are ours (never user text), checked all the same."""
        path = (self.root / check_key(key, allow_empty=allow_empty)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return path

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- writing ----------------------------------------------------------------------------

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        with no_room_is_storage_full(key):
            writer = AtomicWriter(self._path(key), key=key, max_bytes=max_bytes)
            try:
                for chunk in chunks:
                    writer.write(chunk)
                return writer.commit()
            finally:
                writer.discard()

    async def put_stream_async(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        with no_room_is_storage_full(key):
            writer = AtomicWriter(self._path(key), key=key, max_bytes=max_bytes)
            try:
                async for chunk in chunks:
                    writer.write(chunk)
                return writer.commit()
            finally:
                writer.discard()

    # -- reading ----------------------------------------------------------------------------

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if start < 0:
            raise ValueError(f"a range starts at 0 or later, not {start}")
        path = self._path(key)
        if not path.is_file():  # now, not at the first chunk: a caller answers 404 before 200
            raise FileNotFoundError(f"no artifact {key!r}")
        return _read_range(path, start, end)

    def stat(self, key: str) -> ArtifactStat | None:
        try:
            result = self._path(key).stat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(result.st_mode):
            return None  # a folder of keys, not an object
        modified = datetime.fromtimestamp(result.st_mtime, tz=UTC)
        return ArtifactStat(size_bytes=result.st_size, modified=modified)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        base = self._path(prefix, allow_empty=True)
        if base.is_file():
            yield self._key(base)
            return
        found = [
            self._key(path)
            for path in base.rglob("*")
            if path.is_file() and not is_temp_file(path.name)
        ]
        yield from sorted(found)

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        # The stored file itself: writes replace it by rename, so a reader's file never changes.
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no artifact {key!r}")
        yield path

    def copy_to(self, key: str, destination: Path) -> None:
        with self.local_copy(key) as source:
            shutil.copyfile(source, destination)

    # -- removing ---------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        target = self._path(prefix)
        if target.is_file():
            target.unlink(missing_ok=True)
        elif target.is_dir():
            # missing_ok: the orphan sweep may take an old temp file or empty folder first.
            for path in sorted(target.rglob("*"), reverse=True):
                if path.is_dir():
                    _remove_folder(path)
                else:
                    path.unlink(missing_ok=True)
            _remove_folder(target)

    def sweep_orphans(self, older_than: float) -> list[str]:
        """Remove temp files (`.part`) and empty folders whose last change is more than
        `older_than` seconds ago. Returns the keys removed (a folder's with a trailing `/`).

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
                if is_temp_file(name) and _changed_before(path, cutoff):
                    path.unlink(missing_ok=True)
                    removed.append(self._key(path))
                    emptied = True
            if here == self.root or here.parent == self.root:
                continue
            # A folder just emptied of old temp files was itself left by a killed writer.
            if (emptied or _changed_before(here, cutoff)) and _remove_folder(here):
                removed.append(self._key(here) + "/")
        if removed:
            log.info("swept %d orphan(s) from the artifact store", len(removed))
        return removed


def _read_range(path: Path, start: int, end: int | None) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        left = None if end is None else max(end - start, 0)
        while left is None or left > 0:
            chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


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
