"""Streaming files up and down with a progress callback; nothing is held in memory whole."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from robustify.errors import ChecksumMismatch

# on_progress(bytes done, bytes in all or None when the server did not say)
ProgressCallback = Callable[[int, int | None], None]

STRONG_SHA256_ETAG = re.compile(r'^"([0-9a-f]{64})"$')


class ProgressReader:
    """A file opened for reading that reports how much of it has been read.

    httpx reads the multipart file part in chunks through this, so the callback follows the
    bytes as they go out; `fileno` lets httpx send a Content-Length without reading ahead.
    """

    def __init__(self, handle: BinaryIO, total: int, on_progress: ProgressCallback | None) -> None:
        self._handle, self._total, self._on_progress = handle, total, on_progress
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self._done += len(chunk)
        if self._on_progress is not None and chunk:
            self._on_progress(self._done, self._total)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._handle.seek(offset, whence)
        if whence == os.SEEK_SET:
            self._done = position  # httpx rewinds before sending: a retry starts over
        return position

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()


def expected_sha256(etag: str | None) -> str | None:
    """The sha256 in a strong ETag (models carry theirs); None for any other ETag."""
    match = STRONG_SHA256_ETAG.match(etag or "")
    return match.group(1) if match else None


class PartFile:
    """A download's bytes in a temporary file beside `destination`, hashed as they come and
    renamed only once every byte is there (and matches the announced sha256): never a
    half-written model. A download resumed after a dropped connection appends; one the server
    answers whole again starts over. Used as a context manager: the part file never outlives it.
    """

    def __init__(self, destination: Path, on_progress: ProgressCallback | None) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.destination, self._on_progress = destination, on_progress
        self.partial = destination.with_name(f".{destination.name}.part")
        self._handle = self.partial.open("wb")
        self._digest = hashlib.sha256()
        self.done = 0
        self.total: int | None = None
        self.etag: str | None = None  # of the version whose bytes these are

    def __enter__(self) -> PartFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()

    def restart(self, *, etag: str | None, total: int | None) -> None:
        """Drop the bytes so far: the server sends the file (version `etag`) from its start."""
        self._handle.seek(0)
        self._handle.truncate()
        self._digest, self.done = hashlib.sha256(), 0
        self.etag, self.total = etag, total

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._digest.update(chunk)
        self.done += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self.done, self.total)

    def finish(self, sha256: str | None) -> Path:
        """Check the bytes against `sha256` (when given) and move them to `destination`."""
        self._handle.close()
        if sha256 is not None and self._digest.hexdigest() != sha256:
            raise ChecksumMismatch(
                f"the download's sha256 is {self._digest.hexdigest()}, the server announced "
                f"{sha256}"
            )
        os.replace(self.partial, self.destination)
        return self.destination
