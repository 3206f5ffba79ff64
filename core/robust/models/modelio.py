"""Safe model I/O: read an uploaded model without running untrusted pickles, check it, save it back.

`load_model` accepts TorchScript, a state_dict (read with `torch.load(weights_only=True)` only)
or safetensors, wraps it as `RobustModel` (Normalize -> net, inputs in [0,1] pixels) and checks
one forward pass; `save_model` writes the bare net back in the format it came in.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import safetensors.torch
import torch
from torch import nn

from core.robust.errors import InvalidConfig, ModelLoadError
from core.robust.models.architectures import build_architecture
from core.robust.models.formats import FORMATS, ModelFormat, PathLike, detect_format

__all__ = [
    "FORMATS",
    "ModelFormat",
    "ModelSpec",
    "RobustModel",
    "detect_format",
    "load_model",
    "model_from_module",
    "save_model",
]

_NESTING_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: its file format, how to rebuild it, and the input it expects."""

    format: ModelFormat
    architecture: str | None
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidConfig(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        shape = self.input_shape
        if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise InvalidConfig(
                f"input_shape must be three positive integers [C, H, W], got {list(shape)}"
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise InvalidConfig(f"num_classes must be a positive integer, got {self.num_classes}")
        channels = shape[0]
        for field, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != channels:
                raise InvalidConfig(
                    f"{field} has {len(values)} values but input_shape has {channels} channels"
                )
        if self.std is not None and not all(s > 0 for s in self.std):
            raise InvalidConfig(f"std values must all be > 0, got {list(self.std)}")


class RobustModel(nn.Module):
    """`net` behind a fixed normalization, so inputs are always pixels in [0,1].

    Attacks and epsilons live in pixel space; `net` keeps the exact input the user's model
    expected, which is what `save_model` writes back.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        channels = spec.input_shape[0]
        mean = spec.mean if spec.mean is not None else (0.0,) * channels
        std = spec.std if spec.std is not None else (1.0,) * channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def __deepcopy__(self, memo: dict[int, Any]) -> RobustModel:
        # TorchScript's C++ deepcopy clones parameters *with* autograd history: the copies are
        # non-leaf tensors (optimizers refuse them) whose gradients flow into the original's.
        # Copying under no_grad gives clean leaves; their requires_grad flags are restored.
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        with torch.no_grad():
            state = copy.deepcopy(self.__dict__, memo)
        clone.__setstate__(state)
        wanted = {name: param.requires_grad for name, param in self.named_parameters()}
        for name, param in clone.named_parameters():
            param.requires_grad_(wanted[name])
        return clone


def copy_model(model: nn.Module) -> nn.Module:
    """A trainable deep copy of any module, TorchScript included (see RobustModel.__deepcopy__)."""
    with torch.no_grad():
        clone = copy.deepcopy(model)
    wanted = {name: param.requires_grad for name, param in model.named_parameters()}
    for name, param in clone.named_parameters():
        param.requires_grad_(wanted[name])
    return clone


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    # TorchScript is deprecated upstream but is the one self-contained fine-tunable format we
    # accept; the warning on every load/save would only be noise in worker logs.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning
        )
        yield


def _unwrap_state_dict(loaded: object) -> dict[str, torch.Tensor]:
    if not isinstance(loaded, Mapping):
        raise ModelLoadError(f"the file holds a {type(loaded).__name__}, not a state_dict")
    nested = [key for key in _NESTING_KEYS if isinstance(loaded.get(key), Mapping)]
    if len(nested) == 1:
        loaded = loaded[nested[0]]
    elif len(nested) > 1:
        raise ModelLoadError(
            f"the checkpoint has several candidate state_dicts ({', '.join(nested)}); "
            "save just one of them"
        )
    state = dict(cast(Mapping[str, object], loaded))
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelLoadError(
                f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
    # DataParallel / DistributedDataParallel save every key under `module.`.
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return cast(dict[str, torch.Tensor], state)


def _few(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def _load_weights(net: nn.Module, state: dict[str, torch.Tensor], *, architecture: str) -> None:
    try:
        # strict=False so the keys can be reported here, in a short message, and refused.
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches are raised even with strict=False
        raise ModelLoadError(
            f"weights do not fit {architecture} (check num_classes and input_shape): {exc}"
        ) from exc
    missing = list(result.missing_keys)
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        raise ModelLoadError(f"weights do not fit architecture {architecture}: {'; '.join(parts)}")


def _refused_pickle_message(exc: pickle.UnpicklingError) -> str:
    # torch's own message advises weights_only=False, which this service never does.
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    wanted = f" (it asks for {found.group(1)})" if found else ""
    return (
        f"refused: the file's pickle needs more than tensors and plain containers{wanted}; "
        "nothing in it was run. Upload model.state_dict() saved with torch.save, "
        "a safetensors file, or a TorchScript archive"
    )


def _read_net(file: Path, spec: ModelSpec) -> nn.Module:
    if spec.format == "torchscript":
        try:
            with _quiet_torchscript():
                return torch.jit.load(str(file), map_location="cpu")
        except Exception as exc:  # the C++ loader raises several types on corrupt archives
            raise ModelLoadError(f"cannot load TorchScript archive: {exc}") from exc
    if spec.architecture is None:
        raise ModelLoadError(
            f"a {spec.format} file holds only weights: name its architecture "
            "(e.g. builtin:digits_cnn or torchvision:resnet18)"
        )
    try:
        if spec.format == "safetensors":
            loaded: object = safetensors.torch.load_file(file, device="cpu")
        else:
            # weights_only=True is the whole safety story for pickles: its unpickler refuses
            # any global outside a small allow-list, so no code in the file ever runs.
            # A file object, not a path: torch.load hands paths ending in .safetensors to
            # another reader, and the bytes have already said what this file is.
            with file.open("rb") as handle:
                loaded = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(_refused_pickle_message(exc)) from exc
    except Exception as exc:  # third-party readers raise many types on corrupt/hostile input
        raise ModelLoadError(f"cannot read {spec.format} file: {exc}") from exc
    state = _unwrap_state_dict(loaded)
    net = build_architecture(
        spec.architecture, input_shape=spec.input_shape, num_classes=spec.num_classes
    )
    _load_weights(net, state, architecture=spec.architecture)
    return net


def _device_of(net: nn.Module) -> torch.device:
    for tensor in [*net.parameters(), *net.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _check_forward(model: RobustModel) -> None:
    spec = model.spec
    input_shape = [2, *spec.input_shape]
    expected = [2, spec.num_classes]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(*input_shape, device=_device_of(model)))
    except Exception as exc:  # user code: anything can go wrong inside its forward
        raise ModelLoadError(f"forward pass on input {input_shape} failed: {exc}") from exc
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor):
        raise ModelLoadError(
            f"forward pass on input {input_shape} returned a {type(output).__name__}; "
            f"expected a tensor of shape {expected}"
        )
    if list(output.shape) != expected:
        raise ModelLoadError(
            f"forward pass on input {input_shape} gave output shape {list(output.shape)}; "
            f"expected {expected} (num_classes={spec.num_classes})"
        )


def _make_spec(
    format: str,
    *,
    architecture: str | None,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...] | list[float] | None,
    std: tuple[float, ...] | list[float] | None,
) -> ModelSpec:
    return ModelSpec(
        format=cast(ModelFormat, format),
        architecture=architecture,
        input_shape=cast(tuple[int, int, int], tuple(input_shape)),
        num_classes=num_classes,
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std),
    )


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
    _make_spec(
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
    spec = _make_spec(
        detected,
        architecture=None if detected == "torchscript" else architecture,
        input_shape=input_shape,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
    model = RobustModel(_read_net(file, spec), spec)
    model.eval()
    _check_forward(model)
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
    spec = _make_spec(
        format,
        architecture=architecture,
        input_shape=input_shape,
        num_classes=num_classes,
        mean=mean,
        std=std,
    )
    model = RobustModel(net, spec).to(_device_of(net))
    model.train(net.training)
    _check_forward(model)
    return model


# A constant of a scripted class, as torch prints it in the archive's code.
_SCRIPTED_CONSTANT = re.compile(r"  \w+ : Final\[.*\] = .*")


def _write_net(net: nn.Module, target: Path, *, format: ModelFormat) -> None:
    """Write `net` so that the same weights always give the same bytes (and sha256).

    torch names an archive's top folder after the file it writes to (here a random temp
    name), so torch.save and torch.jit.save get an open file instead: the folder is then
    always `archive`, and every other byte follows from the records."""
    if format == "torchscript":
        with _quiet_torchscript():
            data = _torchscript_bytes(net)
        target.write_bytes(data)
    elif format == "state_dict":
        with target.open("wb") as handle:
            torch.save(net.state_dict(), handle)
    else:
        # save_model, unlike save_file, de-duplicates tied tensors instead of failing on them.
        safetensors.torch.save_model(net, str(target))


def _torchscript_bytes(net: nn.Module) -> bytes:
    """`net` as a TorchScript archive whose bytes depend on its code and weights alone.

    Two things besides those would show in the bytes: the TorchScript pickler shares (memoizes)
    a tensor only when something else holds it too (an optimizer, a Python parameter object),
    and the scripting compiler lists a class's constants (a Conv2d's stride, padding, ...) in
    the order of a Python set of names, which changes with the interpreter's hash seed. So the
    module is saved, its constants sorted where we scripted it, loaded back as a fresh copy
    that nothing else holds, and that copy is what is written."""
    scripted = net
    if not isinstance(net, torch.jit.ScriptModule):
        try:
            scripted = torch.jit.script(net)
        except Exception as exc:  # the scripting compiler rejects many Python constructs
            raise ModelLoadError(f"cannot convert the model to TorchScript: {exc}") from exc
    first = io.BytesIO()
    torch.jit.save(scripted, first)
    if scripted is not net:
        first = _with_sorted_constants(first)
    first.seek(0)
    fresh = torch.jit.load(first, map_location="cpu")
    written = io.BytesIO()
    torch.jit.save(fresh, written)
    return written.getvalue()


def _with_sorted_constants(archive: io.BytesIO) -> io.BytesIO:
    """A copy of a TorchScript archive with each class's run of constants in sorted order."""
    rewritten = io.BytesIO()
    with (
        zipfile.ZipFile(archive) as source,
        zipfile.ZipFile(rewritten, "w", zipfile.ZIP_STORED) as target,
    ):
        for entry in source.infolist():
            data = source.read(entry)
            if "/code/" in entry.filename and entry.filename.endswith(".py"):
                data = _sorted_constants(data.decode("utf-8")).encode("utf-8")
            target.writestr(entry.filename, data)
    return rewritten


def _sorted_constants(code: str) -> str:
    """`code` with every run of consecutive constant lines of a class sorted."""
    lines: list[str] = []
    run: list[str] = []
    for line in code.split("\n"):
        if _SCRIPTED_CONSTANT.fullmatch(line):
            run.append(line)
            continue
        lines.extend(sorted(run))
        run = []
        lines.append(line)
    lines.extend(sorted(run))
    return "\n".join(lines)


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
