"""The worker's dataset cache: an archive is extracted once and reused, a failed extraction
leaves nothing behind, and the least recently used entries go when the cache is over its bound."""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from pathlib import Path

import pytest

from core.robust.errors import UnsafeArchiveError
from core.service.jobs.dataset_cache import DatasetCache


def make_archive(folder: Path, name: str, *, files: dict[str, bytes]) -> tuple[Path, str]:
    archive = folder / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for entry, content in files.items():
            zipped.writestr(entry, content)
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


class CountingFetch:
    """Copies an archive where the cache asks, counting how often it was asked."""

    def __init__(self, archive: Path) -> None:
        self.archive, self.calls = archive, 0

    def __call__(self, destination: Path) -> None:
        self.calls += 1
        destination.write_bytes(self.archive.read_bytes())


def test_archive_is_extracted_once_and_reused(tmp_path: Path) -> None:
    archive, sha = make_archive(tmp_path, "fruit", files={"apple/0.png": b"a", "pear/0.png": b"p"})
    cache = DatasetCache(tmp_path / "cache", max_bytes=10**9, in_use_seconds=0)
    fetch = CountingFetch(archive)

    first = cache.extracted(sha, fetch_archive=fetch)
    second = cache.extracted(sha, fetch_archive=fetch)

    assert first == second == tmp_path / "cache" / sha
    assert fetch.calls == 1
    assert (first / "apple" / "0.png").read_bytes() == b"a"
    # Nothing but the entry: the archive and the scratch folder are gone.
    assert [path.name for path in (tmp_path / "cache").iterdir()] == [sha]


def test_unsafe_archive_leaves_no_entry(tmp_path: Path) -> None:
    archive, sha = make_archive(tmp_path, "evil", files={"../escape.png": b"x"})
    cache = DatasetCache(tmp_path / "cache", max_bytes=10**9, in_use_seconds=0)

    with pytest.raises(UnsafeArchiveError):
        cache.extracted(sha, fetch_archive=CountingFetch(archive))

    assert list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "escape.png").exists()


def test_least_recently_used_entries_are_evicted_past_the_bound(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", max_bytes=2_500, in_use_seconds=0)
    entries = {}
    for age, name in enumerate(("old", "used", "new")):
        archive, sha = make_archive(tmp_path, name, files={"a/0.png": os.urandom(1_000)})
        entries[name] = cache.extracted(sha, fetch_archive=CountingFetch(archive))
        # Hours apart, oldest first; then "used" is read again, so "old" is the least recent.
        stamp = time.time() - 3600 * (3 - age)
        os.utime(entries[name], (stamp, stamp))
    cache.extracted(entries["used"].name, fetch_archive=CountingFetch(tmp_path / "none"))

    archive, sha = make_archive(tmp_path, "newest", files={"a/0.png": os.urandom(1_000)})
    newest = cache.extracted(sha, fetch_archive=CountingFetch(archive))

    assert not entries["old"].exists()
    assert not entries["new"].exists()  # 3 x 1,000 bytes do not fit 2,500: the next oldest
    assert entries["used"].is_dir() and newest.is_dir()


def test_entries_in_use_are_not_evicted(tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", max_bytes=1, in_use_seconds=3600)
    made = []
    for name in ("first", "second"):
        archive, sha = make_archive(tmp_path, name, files={"a/0.png": os.urandom(1_000)})
        made.append(cache.extracted(sha, fetch_archive=CountingFetch(archive)))

    # Both were used within the hour a job may still be reading them: over the bound, kept.
    assert all(entry.is_dir() for entry in made)
