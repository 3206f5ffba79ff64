"""The artifact store: uploads, checkpoints and hardened models, as files under one folder.

Writes are atomic (a temp file in the same folder, then rename), so a reader never sees half a
file; the folder may be a volume shared by the API and every worker.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import TooLarge

CHUNK_BYTES = 1024 * 1024


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
            return self.put_chunks(key, iter(lambda: handle.read(CHUNK_BYTES), b""))

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        return self.put_chunks(key, [data])

    def put_chunks(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        """Write `chunks` to `key`, hashing as it goes; TooLarge past `max_bytes` (nothing kept)."""
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
        """As put_chunks, for a request body that arrives asynchronously."""
        writer = _AtomicWriter(self.path(key), key=key, max_bytes=max_bytes)
        try:
            async for chunk in chunks:
                writer.write(chunk)
            return writer.commit()
        finally:
            writer.discard()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every artifact under `prefix/` (e.g. a job's checkpoints)."""
        folder = self.path(prefix)
        if folder.is_dir():
            for path in sorted(folder.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            folder.rmdir()


class _AtomicWriter:
    """Streams into a temp file beside the target, hashing and counting; commit renames it."""

    def __init__(self, target: Path, *, key: str, max_bytes: int | None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part"
        )
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
        self.handle.close()
        self.temp.unlink(missing_ok=True)
