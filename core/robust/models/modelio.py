"""Safe model I/O: read an uploaded model without running untrusted pickles, check it, save it back.

`load_model` accepts TorchScript, a state_dict (read with `torch.load(weights_only=True)` only)
or safetensors, wraps it as `RobustModel` (Normalize -> net, inputs in [0,1] pixels) and checks
one forward pass; `save_model` writes the bare net back in the format it came in.
The parts: formats (telling a file's format), spec (ModelSpec), reading, torchscript (writing it
deterministically) and robust_model (the wrapper); their public names are re-exported here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from core.robust.errors import InvalidConfig, ModelLoadError
from core.robust.models.formats import FORMATS, ModelFormat, PathLike, detect_format
from core.robust.models.reading import read_net
from core.robust.models.robust_model import RobustModel, check_forward, copy_model, device_of
from core.robust.models.spec import ModelSpec, make_spec
from core.robust.models.torchscript import quiet_torchscript, torchscript_bytes

__all__ = [
    "FORMATS",
    "ModelFormat",
    "ModelSpec",
    "RobustModel",
    "copy_model",
    "detect_format",
    "load_model",
    "model_from_module",
    "save_model",
]


def load_model(
    path: PathLike,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...] | list[float] | None = None,
    std: tuple[float, ...] | list[float] | None = None,
    architecture: str | None = None,
    format: ModelFormat | None = None,
) -> RobustModel:
    """Load an uploaded model, wrap it with its normalization and check one forward pass.

    The format is detected from the file's bytes; a given `format` must agree with it.
    state_dict and safetensors files need `architecture`; it is ignored for TorchScript.
    Returns the model in eval mode on the CPU. Raises ModelLoadError (or InvalidConfig for a
    malformed shape or normalization) with a message that says what to change.
    """
    file = Path(path)
    # Checking the declaration first refuses bad uploads before any bytes are parsed.
    make_spec(
        format or "state_dict",
        architecture=architecture,
        input_shape=input_shape,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
    detected = detect_format(file)
    if format is not None and format != detected:
        raise ModelLoadError(f"the file is a {detected} file, not {format} as declared")
    spec = make_spec(
        detected,
        architecture=None if detected == "torchscript" else architecture,
        input_shape=input_shape,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
    model = RobustModel(read_net(file, spec), spec)
    model.eval()
    check_forward(model)
    return model


def model_from_module(
    net: nn.Module,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...] | list[float] | None = None,
    std: tuple[float, ...] | list[float] | None = None,
    architecture: str | None = None,
    format: ModelFormat = "state_dict",
) -> RobustModel:
    """Wrap a module already in memory (a notebook's model) like `load_model` would.

    `net` is used as is (not copied) and stays on its device; its train/eval mode is kept.
    """
    spec = make_spec(
        format,
        architecture=architecture,
        input_shape=input_shape,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
    model = RobustModel(net, spec).to(device_of(net))
    model.train(net.training)
    check_forward(model)
    return model


def _write_net(net: nn.Module, target: Path, *, format: ModelFormat) -> None:
    """Write `net` so that the same weights always give the same bytes (and sha256).

    torch names an archive's top folder after the file it writes to (here a random temp
    name), so torch.save and torch.jit.save get an open file instead: the folder is then
    always `archive`, and every other byte follows from the records."""
    if format == "torchscript":
        with quiet_torchscript():
            data = torchscript_bytes(net)
        target.write_bytes(data)
    elif format == "state_dict":
        with target.open("wb") as handle:
            torch.save(net.state_dict(), handle)
    else:
        # save_model, unlike save_file, de-duplicates tied tensors instead of failing on them.
        safetensors.torch.save_model(net, str(target))


def save_model(model: RobustModel, path: PathLike, *, format: ModelFormat | None = None) -> None:
    """Write `model.net` (normalization not baked in) in the format it came in, or `format`.

    The file appears atomically: readers see the old file or the complete new one.
    """
    target = Path(path)
    chosen = format or model.spec.format
    if chosen not in FORMATS:
        raise InvalidConfig(f"format must be one of {', '.join(FORMATS)}, got {chosen!r}")
    handle, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    os.close(handle)
    temp = Path(temp_name)
    try:
        _write_net(model.net, temp, format=chosen)
        with temp.open("rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
