"""The worker's cache of extracted ImageFolder archives: each archive is extracted once (by its
sha256), reused by every later job on the same dataset, and the least recently used entries are
removed when the cache passes its size bound.

Extraction runs here, on the trusted side, through the engine's safe_extract (its limits on
entries, sizes, links and paths), so that a sandboxed job can only read an entry, never write
one another job will read.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.robust.datasets.archives import safe_extract

__all__ = ["DatasetCache"]

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Written last into an entry, before it is renamed into place: its size, for the eviction.
_SIZE_FILE = ".robustify-bytes"


class DatasetCache:
    """Extracted archives under `folder`, one folder per sha256, at most about `max_bytes`.

    An entry used within `in_use_seconds` (a job may still be reading it) is never evicted,
    so the bound can be passed for a while when many recent entries are larger than it.
    """

    def __init__(self, folder: Path, *, max_bytes: int, in_use_seconds: float) -> None:
        self.folder, self.max_bytes, self.in_use_seconds = Path(folder), max_bytes, in_use_seconds

    def extracted(self, sha256: str, *, fetch_archive: Callable[[Path], None]) -> Path:
        """The folder holding the archive `sha256` extracted; `fetch_archive(path)` writes the
        archive there first when it is not cached yet (safe_extract reads its format)."""
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = self.folder / sha256
        if entry.is_dir():
            os.utime(entry)  # the eviction's "recently used"
            return entry
        # Extracted beside the entry and renamed into place: a reader sees all of it or none,
        # and two workers extracting the same archive at once both end with one whole entry.
        with tempfile.TemporaryDirectory(prefix=f".{sha256[:12]}-", dir=self.folder) as scratch:
            archive = Path(scratch) / "archive"
            fetch_archive(archive)
            extracted = Path(scratch) / "extracted"
            safe_extract(archive, extracted)
            archive.unlink()
            (extracted / _SIZE_FILE).write_text(str(_folder_bytes(extracted)))
            try:
                extracted.rename(entry)
            except OSError:
                if not entry.is_dir():
                    raise
                # Another worker renamed its copy first; ours is dropped with the scratch.
        self.evict(keep=entry)
        return entry

    def evict(self, *, keep: Path | None = None) -> None:
        """Remove the least recently used entries until the cache fits its bound."""
        entries = [path for path in self.folder.iterdir() if _SHA256.match(path.name)]
        sizes = {path: _entry_bytes(path) for path in entries}
        total = sum(sizes.values())
        recent = time.time() - self.in_use_seconds
        for path in sorted(entries, key=lambda path: path.stat().st_mtime):
            if total <= self.max_bytes:
                return
            if path == keep or path.stat().st_mtime > recent:
                continue
            # Renamed first so that no job starting now picks up a half-removed entry.
            doomed = path.with_name(f".evicted-{path.name}")
            path.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            total -= sizes[path]
            log.info("dataset cache: evicted %s (%d bytes)", path.name, sizes[path])
        if total > self.max_bytes:
            log.warning(
                "dataset cache holds %d bytes, more than its bound of %d: the rest is in use",
                total,
                self.max_bytes,
            )


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _entry_bytes(entry: Path) -> int:
    try:
        return int((entry / _SIZE_FILE).read_text())
    except (OSError, ValueError):
        return _folder_bytes(entry)
