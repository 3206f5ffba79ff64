"""Atomic writes into a folder: a temp file beside the target, hashed and counted as it is
written, renamed over the target on commit; a full disk becomes StorageFull."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from core.service.errors import StorageFull, TooLarge
from core.service.storage.interface import StoredArtifact

log = logging.getLogger(__name__)

# The errors of a store that has no room left: the disk is full, or the quota is spent.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
PART_SUFFIX = ".part"


def is_temp_file(name: str) -> bool:
    """Whether `name` is one of AtomicWriter's temp files (never a committed artifact)."""
    return name.startswith(".") and name.endswith(PART_SUFFIX)


@contextmanager
def no_room_is_storage_full(key: str) -> Iterator[None]:
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


class AtomicWriter:
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
