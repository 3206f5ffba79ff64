"""Model file formats: their names, and telling a file's format from its bytes (never its name).

Torch-free: reading a zip's entry names or a header runs nothing, and the API names the formats.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Literal

from core.robust.errors import ModelLoadError

__all__ = ["FILE_SUFFIXES", "FORMATS", "ModelFormat", "PathLike", "detect_format"]

ModelFormat = Literal["torchscript", "state_dict", "safetensors"]
FORMATS: tuple[ModelFormat, ...] = ("torchscript", "state_dict", "safetensors")
# The file name ending a download of each format gets (the API's and the CLI's).
FILE_SUFFIXES: dict[str, str] = {
    "torchscript": ".pt",
    "state_dict": ".pt",
    "safetensors": ".safetensors",
}
PathLike = str | os.PathLike[str]

_PICKLE_PROTO_OPCODE = b"\x80"
_ZIP_MAGIC = b"PK\x03\x04"


def _zip_entries(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path.name} looks like a zip archive but cannot be read: {exc}"
        ) from exc
    # torch writes every entry under one top-level folder named after the file.
    return [name.split("/", 1)[1] if "/" in name else name for name in names]


def _classify_zip(path: Path) -> ModelFormat:
    entries = _zip_entries(path)
    if any(e == "archive_format" or e.startswith("models/") for e in entries):
        raise ModelLoadError(
            "torch.export (.pt2) archives are not accepted because their loader falls back to "
            "unsafe unpickling; upload a TorchScript archive, a state_dict or a safetensors file"
        )
    if any(e == "constants.pkl" or e.startswith("code/") for e in entries):
        return "torchscript"
    if "data.pkl" in entries:
        return "state_dict"
    raise ModelLoadError(
        f"{path.name} is a zip archive but not one written by torch.save or torch.jit.save"
    )


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 2 <= header_length <= size - 8


def detect_format(path: PathLike) -> ModelFormat:
    """Tell a model file's format from its bytes (never its name).

    Raises ModelLoadError for a .pt2 archive and for anything that is not TorchScript, a
    torch.save state_dict or safetensors.
    """
    file = Path(path)
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {file.name}: {exc}") from exc
    if _looks_like_safetensors(head, size):
        return "safetensors"
    if head.startswith(_ZIP_MAGIC):
        return _classify_zip(file)
    if head.startswith(_PICKLE_PROTO_OPCODE):
        return "state_dict"  # legacy (pre-1.6) torch.save: a bare pickle stream
    raise ModelLoadError(
        f"{file.name} is not a TorchScript archive, state_dict or safetensors file"
    )
