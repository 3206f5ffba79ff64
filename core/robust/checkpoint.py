"""Resumable fine-tuning checkpoints: weights, optimizer, schedule position, RNG states.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so it loads with
`torch.load(weights_only=True)`: reading one back never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from core.robust.errors import InvalidConfig

CHECKPOINT_FORMAT = "robustify-finetune-checkpoint/1"

Checkpoint = dict[str, Any]


def save_checkpoint(checkpoint: Checkpoint, destination: str | Path | BinaryIO) -> None:
    """Write `checkpoint`; to a path atomically (temp file in the same folder, then rename)."""
    if not isinstance(destination, str | Path):
        torch.save(checkpoint, destination)
        return
    path = Path(destination)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp_file:
            torch.save(checkpoint, temp_file)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(source: str | Path | BinaryIO) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (weights only, never arbitrary pickle)."""
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InvalidConfig(f"not a readable fine-tuning checkpoint: {exc}") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InvalidConfig(
            f"not a robustify fine-tuning checkpoint (expected {CHECKPOINT_FORMAT})"
        )
    return checkpoint
