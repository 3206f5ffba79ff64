"""Reading an uploaded model's net: a TorchScript archive as it is, or weights (a state_dict read
with `torch.load(weights_only=True)` only, or safetensors) loaded into the named architecture."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import safetensors.torch
import torch
from torch import nn

from core.robust.errors import ModelLoadError
from core.robust.models.architectures import build_architecture
from core.robust.models.spec import ModelSpec
from core.robust.models.torchscript import quiet_torchscript

__all__ = ["read_net"]

_NESTING_KEYS = ("state_dict", "model_state_dict", "model")


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


def read_net(file: Path, spec: ModelSpec) -> nn.Module:
    if spec.format == "torchscript":
        try:
            with quiet_torchscript():
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
