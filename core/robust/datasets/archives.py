"""Extract uploaded zip and tar archives, refusing the whole archive if any entry could escape."""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.robust.errors import DatasetError, UnsafeArchiveError

__all__ = ["safe_extract"]

_CHUNK_BYTES = 1024 * 1024
# A Windows drive ("C:", "C:\\x") is absolute there even though it is relative on Linux.
_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_extract(
    archive: Path,
    destination: Path,
    *,
    max_files: int = 100_000,
    max_total_bytes: int = 2 * 1024**3,
) -> None:
    """Extract a .zip, .tar or .tar.gz `archive` into `destination` (absent or empty).

    Every entry is checked before anything is written: no absolute path, no `..`, no links or
    devices, at most `max_files` entries and `max_total_bytes` declared uncompressed bytes. The
    bytes actually written are limited too; on any failure `destination` is left empty.
    """
    archive = Path(archive)
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DatasetError(f"cannot extract into {destination}: it is not an empty folder")
    if _is_tar(archive):
        _extract_tar(archive, destination, max_files=max_files, max_total_bytes=max_total_bytes)
    elif zipfile.is_zipfile(archive):
        _extract_zip(archive, destination, max_files=max_files, max_total_bytes=max_total_bytes)
    else:
        raise DatasetError(f"{archive.name} is not a zip or tar archive")


def _is_tar(archive: Path) -> bool:
    # Checked before zip: a tar header has a checksum, while a zip's end record is searched
    # for anywhere in the last 64 KiB, so a tar holding a zip could pass for a zip.
    try:
        return tarfile.is_tarfile(archive)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read archive {archive.name}: {exc}") from exc


def _member_parts(archive: Path, name: str) -> list[str]:
    """The path components of an entry name, or UnsafeArchiveError if it could leave the folder."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"{archive.name}: entry {name!r} has an empty or invalid name")
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafeArchiveError(
            f"{archive.name}: entry {name!r} has an absolute path; refusing the whole archive"
        )
    # Backslashes count as separators: archives made on Windows use them, and a `..\\` entry
    # must not slip through because Linux reads it as one odd file name.
    parts = [part for part in re.split(r"[\\/]", name) if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"{archive.name}: entry {name!r} has a '..' component; refusing the whole archive"
        )
    if not parts:
        raise UnsafeArchiveError(f"{archive.name}: entry {name!r} names no file")
    return parts


def _check_count(archive: Path, count: int, name: str, max_files: int) -> None:
    if count > max_files:
        raise UnsafeArchiveError(
            f"{archive.name} has more than {max_files} entries (at {name!r}); refusing it"
        )


def _check_total(archive: Path, total: int, name: str, max_total_bytes: int) -> None:
    if total > max_total_bytes:
        raise UnsafeArchiveError(
            f"{archive.name} declares more than {max_total_bytes} uncompressed bytes "
            f"(passed at entry {name!r}); refusing it"
        )


@contextmanager
def _emptied_on_failure(destination: Path) -> Iterator[None]:
    """On failure, remove what was extracted, and `destination` too if it was created here."""
    created = not destination.exists()
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(destination, ignore_errors=True)
        elif destination.is_dir():
            for child in destination.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


@contextmanager
def _naming_entry(archive: Path, name: str) -> Iterator[None]:
    """Report a failed write by the entry's name, not by a path in a scratch folder."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DatasetError(f"{archive.name}: cannot extract entry {name!r}: {reason}") from exc


def _extract_zip(archive: Path, destination: Path, *, max_files: int, max_total_bytes: int) -> None:
    try:
        with zipfile.ZipFile(archive) as zip_file:
            entries = _check_zip_entries(
                archive, zip_file, max_files=max_files, max_total_bytes=max_total_bytes
            )
            with _emptied_on_failure(destination):
                destination.mkdir(parents=True, exist_ok=True)
                _write_zip_entries(
                    archive, zip_file, entries, destination, max_total_bytes=max_total_bytes
                )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError) as exc:
        raise DatasetError(f"cannot extract {archive.name}: {exc}") from exc


def _check_zip_entries(
    archive: Path, zip_file: zipfile.ZipFile, *, max_files: int, max_total_bytes: int
) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    entries = []
    declared_total = 0
    for count, info in enumerate(zip_file.infolist(), start=1):
        name = info.filename
        _check_count(archive, count, name, max_files)
        parts = _member_parts(archive, name)
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type == stat.S_IFLNK:
            raise UnsafeArchiveError(
                f"{archive.name}: entry {name!r} is a symbolic link; refusing the whole archive"
            )
        # Zips made on Windows leave the Unix mode at 0; anything set must be a file or folder.
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(
                f"{archive.name}: entry {name!r} is a device, fifo or socket; refusing it"
            )
        if info.flag_bits & 0x1:
            raise DatasetError(f"{archive.name}: entry {name!r} is encrypted")
        declared_total += info.file_size
        _check_total(archive, declared_total, name, max_total_bytes)
        entries.append((info, parts))
    return entries


def _write_zip_entries(
    archive: Path,
    zip_file: zipfile.ZipFile,
    entries: list[tuple[zipfile.ZipInfo, list[str]]],
    destination: Path,
    *,
    max_total_bytes: int,
) -> None:
    root = destination.resolve()
    written = 0
    for info, parts in entries:
        target = root.joinpath(*parts)
        if not target.resolve().is_relative_to(root):
            raise UnsafeArchiveError(f"{archive.name}: entry {info.filename!r} leaves the folder")
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        with _naming_entry(archive, info.filename):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Declared sizes come from the archive and can lie: the written bytes are counted too.
            with zip_file.open(info) as source, target.open("wb") as sink:
                while chunk := source.read(_CHUNK_BYTES):
                    written += len(chunk)
                    if written > max_total_bytes:
                        raise UnsafeArchiveError(
                            f"{archive.name}: entry {info.filename!r} pushed the extracted size "
                            f"past {max_total_bytes} bytes (more than declared); refusing it"
                        )
                    sink.write(chunk)


def _extract_tar(archive: Path, destination: Path, *, max_files: int, max_total_bytes: int) -> None:
    try:
        with tarfile.open(archive) as tar_file:
            members = _check_tar_members(
                archive,
                tar_file,
                destination,
                max_files=max_files,
                max_total_bytes=max_total_bytes,
            )
            with _emptied_on_failure(destination):
                destination.mkdir(parents=True, exist_ok=True)
                _write_tar_members(
                    archive, tar_file, members, destination, max_total_bytes=max_total_bytes
                )
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"{archive.name}: {exc}; refusing the whole archive") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot extract {archive.name}: {exc}") from exc


def _check_tar_members(
    archive: Path,
    tar_file: tarfile.TarFile,
    destination: Path,
    *,
    max_files: int,
    max_total_bytes: int,
) -> list[tarfile.TarInfo]:
    members = []
    declared_total = 0
    # Iterated rather than getmembers(), so a bomb of headers stops at max_files.
    for count, member in enumerate(tar_file, start=1):
        name = member.name
        _check_count(archive, count, name, max_files)
        _member_parts(archive, name)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(
                f"{archive.name}: entry {name!r} is a link; refusing the whole archive"
            )
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"{archive.name}: entry {name!r} is a device, fifo or other special file; "
                "refusing the whole archive"
            )
        # The standard library's own policy, as a second opinion on every entry.
        tarfile.data_filter(member, str(destination))
        declared_total += member.size
        _check_total(archive, declared_total, name, max_total_bytes)
        members.append(member)
    return members


def _write_tar_members(
    archive: Path,
    tar_file: tarfile.TarFile,
    members: list[tarfile.TarInfo],
    destination: Path,
    *,
    max_total_bytes: int,
) -> None:
    written = 0
    for member in members:
        with _naming_entry(archive, member.name):
            tar_file.extract(member, destination, set_attrs=False, filter="data")
        if member.isfile():
            written += (destination / member.name).stat().st_size
            if written > max_total_bytes:
                raise UnsafeArchiveError(
                    f"{archive.name}: entry {member.name!r} pushed the extracted size past "
                    f"{max_total_bytes} bytes; refusing it"
                )
