"""The sandboxed side of an upload check (`python -m core.service.sandbox.validation_child`):
import the engine, say "ready", read one request, cap this process's memory and CPU time, check the
file, answer one line of JSON, exit.

It runs in the sandbox of core.service.sandbox.runner, started by core.service.sandbox.validation;
its only input is the file in its read-only input folder, its only output the answer on what was
stdout when it started. Everything a model prints goes to the sandbox's stderr, never into the
answer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from core.service.errors import InvalidRequest, ModelLoadError, RobustError

MAX_REQUEST_BYTES = 64 * 1024
MAX_RESULT_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 2000


def main() -> None:
    answer = _take_stdout()
    # The engine's imports (torch, torchvision, safetensors, PIL) before "ready": a check then
    # starts in milliseconds.
    import torch

    import core.robust.datasets.imagefolder
    import core.robust.datasets.loading
    import core.robust.datasets.npz
    import core.robust.models.modelio
    import core.robust.models.script_ops  # noqa: F401
    from core.robust.models.architectures import list_architectures
    from core.service.sandbox.limits import limit_self

    list_architectures()  # imports timm, whose model names it lists
    torch.set_num_threads(1)
    answer.write(b"ready\n")
    answer.flush()
    line = sys.stdin.buffer.readline(MAX_REQUEST_BYTES)
    if not line:
        return
    request = json.loads(line)
    limits = request.pop("limits")
    # One thread keeps malloc's per-thread arenas (64 MiB of address space each) from eating
    # the memory budget.
    limit_self(memory_bytes=int(limits["memory_bytes"]), cpu_seconds=limits["timeout_seconds"])
    result = check(request, memory_bytes=int(limits["memory_bytes"]))
    answer.write(json.dumps(result, default=str).encode()[:MAX_RESULT_BYTES] + b"\n")
    answer.flush()


def _take_stdout() -> BinaryIO:
    """The answer channel: a copy of fd 1, after which fd 1 points at stderr, so a print in a
    model's code cannot write into the answer."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def check(request: dict[str, Any], *, memory_bytes: int) -> dict[str, Any]:
    try:
        if request["kind"] == "model":
            return {"ok": True, "model": _check_model(request)}
        return {"ok": True, "dataset": _check_dataset(request)}
    except InvalidRequest as exc:
        return _refusal("InvalidRequest", exc.message, exc.field)
    except RobustError as exc:
        return _refusal(type(exc).__name__, str(exc), "file")
    except MemoryError:
        return _refusal(
            "ValidationTimeout",
            f"checking the file needed more than the {memory_bytes} bytes of memory allowed",
            "file",
        )
    except Exception as exc:  # a hostile file may break any reader in any way
        return _refusal("", f"{type(exc).__name__}: {exc}", "file")


def _refusal(error: str, message: str, field: str | None) -> dict[str, Any]:
    return {"ok": False, "error": error, "message": message[:MAX_MESSAGE_CHARS], "field": field}


def _check_model(request: dict[str, Any]) -> dict[str, Any]:
    from core.robust.models.formats import detect_format
    from core.robust.models.modelio import load_model

    path = Path(request["path"])
    detected = detect_format(path)
    declared = request.get("format")
    if declared is not None and declared != detected:
        raise InvalidRequest(f"the file is a {detected} file, not {declared}", field="format")
    architecture = request.get("architecture")
    num_classes = request.get("num_classes")
    if detected != "torchscript":
        _check_architecture(architecture, request)
        if architecture is None:
            raise InvalidRequest(
                f"a {detected} file holds only weights: name its architecture "
                "(e.g. builtin:digits_cnn or torchvision:resnet18)",
                field="architecture",
            )
        if num_classes is None:
            raise InvalidRequest(
                f"a {detected} file needs num_classes to rebuild its architecture",
                field="num_classes",
            )
    else:
        architecture = None
        _check_script(path)
        if num_classes is None:
            num_classes = _torchscript_classes(path, tuple(request["input_shape"]))
    model = load_model(
        path,
        input_shape=tuple(request["input_shape"]),
        num_classes=num_classes,
        mean=request.get("mean"),
        std=request.get("std"),
        architecture=architecture,
        format=detected,
    )
    spec = model.spec
    return {
        "format": spec.format,
        "architecture": spec.architecture,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "mean": None if spec.mean is None else list(spec.mean),
        "std": None if spec.std is None else list(spec.std),
    }


def _check_architecture(architecture: str | None, request: dict[str, Any]) -> None:
    """An unknown architecture name is the `architecture` field's fault, said the engine's way."""
    from core.robust.models.architectures import build_architecture, list_architectures

    if architecture is None or architecture in list_architectures():
        return
    try:
        build_architecture(
            architecture,
            input_shape=tuple(request["input_shape"]),  # type: ignore[arg-type]
            num_classes=request.get("num_classes") or 1,
        )
    except RobustError as exc:
        raise InvalidRequest(str(exc), field="architecture") from exc


def _check_script(path: Path) -> None:
    """Refuse a TorchScript program that calls file, process or network ops, before any of
    its code runs."""
    import torch

    from core.robust.models.script_ops import check_script_ops

    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"cannot load the TorchScript archive: {exc}") from exc
    check_script_ops(net)


def _torchscript_classes(path: Path, input_shape: tuple[int, ...]) -> int:
    """A TorchScript model's class count, read off its output for the declared input."""
    import torch

    try:
        net = torch.jit.load(str(path), map_location="cpu")
        net.eval()
        with torch.no_grad():
            output = net(torch.zeros(2, *input_shape))
    except Exception as exc:  # user code: anything can go wrong inside its forward
        raise ModelLoadError(f"forward pass on input {[2, *input_shape]} failed: {exc}") from exc
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != 2:
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelLoadError(
            f"forward pass on input {[2, *input_shape]} gave {shape}; expected logits of "
            "shape [2, num_classes]"
        )
    return int(output.shape[1])


def _check_dataset(request: dict[str, Any]) -> dict[str, Any]:
    from core.robust.datasets.loading import load_dataset

    path = Path(request["path"])
    data = load_dataset(path)
    return {
        "kind": "npz" if path.name.lower().endswith(".npz") else "imagefolder",
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "train_size": len(data.train),
        "test_size": len(data.test),
    }


if __name__ == "__main__":
    main()
