"""Streaming files up and down with a progress callback; nothing is held in memory whole."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from robustify.errors import ChecksumMismatch

# on_progress(bytes done, bytes in all or None when the server did not say)
ProgressCallback = Callable[[int, int | None], None]

DOWNLOAD_CHUNK = 256 * 1024
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


def write_stream(
    chunks: Iterator[bytes],
    destination: Path,
    *,
    total: int | None,
    sha256: str | None,
    on_progress: ProgressCallback | None,
) -> Path:
    """Write `chunks` to `destination` through a temporary file beside it, renamed only once
    every byte is there (and matches `sha256`, when given): never a half-written model."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.part")
    digest = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ChecksumMismatch(
                f"the download's sha256 is {digest.hexdigest()}, the server announced {sha256}"
            )
        os.replace(partial, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return destination
