"""What every artifact store offers: objects under keys, written from streams and read back as
streams. Nothing here names a file, so an object store (S3) can stand behind the same calls.

Keys are ours (`models/mdl_…/model`, `jobs/job_…/checkpoints/…`), never user text: relative,
`/`-separated, no empty, `.` or `..` parts. A prefix names a folder of keys: `delete_prefix`
and `list_keys` act on `prefix` itself and everything under `prefix/`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StoredArtifact:
    """What a put wrote: the key, its size and its sha256 (hex)."""

    key: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class ArtifactStat:
    """An object's size and when it was last written (UTC)."""

    size_bytes: int
    modified: datetime


def check_key(key: str, *, allow_empty: bool = False) -> str:
    """`key` unchanged when it is one of ours; ValueError otherwise (checked all the same)."""
    if key == "" and allow_empty:
        return key
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"not an artifact key: {key!r}")
    return key


class ArtifactStore(ABC):
    """Objects under keys. Writes are atomic: a reader sees the whole object or none of it."""

    @abstractmethod
    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        """Write `chunks` to `key`, hashing as it goes. TooLarge past `max_bytes`, StorageFull
        when the store has no room; either way nothing is kept under `key`."""

    @abstractmethod
    async def put_stream_async(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        """As put_stream, for a body that arrives asynchronously (an HTTP upload)."""

    @abstractmethod
    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start` up to (not including) `end` of `key`, in chunks; like a slice, an
        end past the object stops at its end and a start past it yields nothing.
        FileNotFoundError when nothing is stored under `key`."""

    @abstractmethod
    def stat(self, key: str) -> ArtifactStat | None:
        """Size and last write of `key`; None when nothing is stored there."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """The committed keys at and under `prefix` (all keys for ""), in sorted order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; nothing happens when it is not there."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object at and under `prefix` (a model's files, a job's checkpoints)."""

    @abstractmethod
    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """A local file holding `key`'s bytes while the context lasts, for code that needs a
        file (the engine, the upload checks). Read it, never write or keep it.
        FileNotFoundError when nothing is stored under `key`."""

    @abstractmethod
    def sweep_orphans(self, older_than: float) -> list[str]:
        """Remove what killed writers left behind, once older than `older_than` seconds;
        returns what was removed. Committed objects are never touched."""

    # -- conveniences over the calls above --------------------------------------------------

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        return self.put_stream(key, [data])

    def put_file(self, key: str, source: Path) -> StoredArtifact:
        """Store the local file `source` under `key`."""
        with source.open("rb") as handle:
            return self.put_stream(key, iter(lambda: handle.read(CHUNK_BYTES), b""))

    def copy_to(self, key: str, destination: Path) -> None:
        """Write `key`'s bytes to the local file `destination` (e.g. into a job's folder)."""
        chunks = self.open_range(key)  # a missing key fails before the file is made
        with destination.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
