"""An artifact store that keeps its objects in memory and has no folder to hand out: the
stand-in for a remote store (S3) in the interface's tests, so that they show the interface
asks nothing of a backend that a file system alone would give."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from core.service.errors import TooLarge
from core.service.storage import CHUNK_BYTES, ArtifactStat, ArtifactStore, StoredArtifact
from core.service.storage.interface import check_key


class MemoryArtifactStore(ArtifactStore):
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, datetime]] = {}

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        check_key(key)
        body = bytearray()
        for chunk in chunks:
            self._append(body, chunk, max_bytes)
        return self._commit(key, bytes(body))

    async def put_stream_async(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        check_key(key)
        body = bytearray()
        async for chunk in chunks:
            self._append(body, chunk, max_bytes)
        return self._commit(key, bytes(body))

    def _append(self, body: bytearray, chunk: bytes, max_bytes: int | None) -> None:
        body.extend(chunk)
        if max_bytes is not None and len(body) > max_bytes:
            raise TooLarge(f"the upload is larger than the limit of {max_bytes} bytes")

    def _commit(self, key: str, body: bytes) -> StoredArtifact:
        # Like an object store's PUT: the object appears whole, only once it is complete.
        self.objects[key] = (body, datetime.now(UTC))
        return StoredArtifact(
            key=key, size_bytes=len(body), sha256=hashlib.sha256(body).hexdigest()
        )

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_key(key)
        if key not in self.objects:
            raise FileNotFoundError(f"no artifact {key!r}")
        body = self.objects[key][0][start:end]
        return (body[at : at + CHUNK_BYTES] for at in range(0, len(body), CHUNK_BYTES))

    def stat(self, key: str) -> ArtifactStat | None:
        check_key(key)
        if key not in self.objects:
            return None
        body, modified = self.objects[key]
        return ArtifactStat(size_bytes=len(body), modified=modified)

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        check_key(prefix, allow_empty=True)
        return iter(sorted(key for key in self.objects if _under(key, prefix)))

    def delete(self, key: str) -> None:
        check_key(key)
        self.objects.pop(key, None)

    def delete_prefix(self, prefix: str) -> None:
        for key in list(self.list_keys(prefix)):
            del self.objects[key]

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        chunks = self.open_range(key)
        with tempfile.TemporaryDirectory(prefix="artifact-") as folder:
            path = Path(folder) / key.rsplit("/", 1)[-1]
            path.write_bytes(b"".join(chunks))
            yield path

    def sweep_orphans(self, older_than: float) -> list[str]:
        return []  # a put that fails keeps nothing: there is never an orphan


def _under(key: str, prefix: str) -> bool:
    return prefix == "" or key == prefix or key.startswith(prefix + "/")
