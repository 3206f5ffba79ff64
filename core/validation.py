"""Check an uploaded model or dataset file with the engine, in a short-lived child process with a
time and a memory limit, never in the calling (API) process.

A TorchScript archive is a program and a hostile pickle or archive is built to hurt whoever
opens it, so the file is opened only in a child that can be killed: it gets
`validation_timeout_seconds` of wall time and `validation_memory_bytes` of address space beyond
what the engine's imports already hold, and hands back plain JSON.

The children are forked from multiprocessing's *forkserver*, a helper process that has imported
torch once and does nothing else: each check then starts in milliseconds instead of paying for
`import torch` (seconds), and still runs in a fresh process of its own that ends with the check.
The forkserver itself never opens a user's file.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from core.config import Settings
from core.errors import (
    DatasetError,
    InvalidConfig,
    InvalidRequest,
    ModelLoadError,
    RobustError,
    UnsafeArchiveError,
    ValidationTimeout,
)

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 2000
# The forkserver imports these once (torch, torchvision, safetensors, PIL); every child starts
# with them loaded.
PRELOAD = [
    "core.robust.modelio",
    "core.robust.data",
    "core.robust.npz_data",
    "core.robust.imagefolder",
    "core.validation",
]

# Errors a child may report, by name: the parent re-raises only these classes.
_REPORTABLE: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        ModelLoadError,
        DatasetError,
        UnsafeArchiveError,
        InvalidConfig,
        InvalidRequest,
        ValidationTimeout,
    )
}


@dataclass(frozen=True)
class ValidationLimits:
    timeout_seconds: float
    memory_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationLimits:
        return cls(
            timeout_seconds=settings.validation_timeout_seconds,
            memory_bytes=settings.validation_memory_bytes,
        )


@dataclass(frozen=True)
class ModelDeclaration:
    """What the uploader says about the model; `num_classes` may be left to a TorchScript
    model's own output, `format` to detection."""

    input_shape: tuple[int, int, int]
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    architecture: str | None = None
    format: str | None = None


@dataclass(frozen=True)
class ValidatedModel:
    format: str
    architecture: str | None
    input_shape: list[int]
    num_classes: int
    mean: list[float] | None
    std: list[float] | None


@dataclass(frozen=True)
class ValidatedDataset:
    kind: str  # npz | imagefolder
    input_shape: list[int]
    num_classes: int
    train_size: int
    test_size: int


def validate_model_file(
    path: Path, declaration: ModelDeclaration, limits: ValidationLimits
) -> ValidatedModel:
    """Load the model as the worker will (format detection, one forward pass on the declared
    input) in a child process. Raises ModelLoadError, InvalidRequest (a declared field that does
    not fit the file; `.field` names it) or ValidationTimeout."""
    request = {"kind": "model", "path": str(path), **declaration.__dict__}
    result = _run_in_child(request, limits, failure=ModelLoadError)
    return ValidatedModel(**result["model"])


def validate_dataset_file(path: Path, limits: ValidationLimits) -> ValidatedDataset:
    """Load the dataset as the worker will (archive guards, shapes, labels) in a child process.
    Raises DatasetError (UnsafeArchiveError for a hostile archive) or ValidationTimeout."""
    result = _run_in_child({"kind": "dataset", "path": str(path)}, limits, failure=DatasetError)
    return ValidatedDataset(**result["dataset"])


# -- the parent's side ----------------------------------------------------------------------

_context_lock = threading.Lock()


def start_helper() -> None:
    """Start the forkserver now (it imports torch: seconds), so the first upload need not wait.
    Optional: the first check starts it otherwise. Its start never counts against a timeout."""
    if _mp_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _mp_context() -> Any:
    with _context_lock:
        if "forkserver" not in multiprocessing.get_all_start_methods():
            return multiprocessing.get_context("spawn")
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context


def _run_in_child(
    request: dict[str, Any], limits: ValidationLimits, *, failure: type[RobustError]
) -> dict[str, Any]:
    context = _mp_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=child_main,
        args=(request, sender, limits.memory_bytes, limits.timeout_seconds),
        name="robustify-validate",
        daemon=True,
    )
    process.start()
    sender.close()
    payload: bytes | None = None
    try:
        ready = wait([receiver, process.sentinel], timeout=limits.timeout_seconds)
        if not ready:
            raise ValidationTimeout(
                f"checking the file took longer than {limits.timeout_seconds:g} seconds; "
                "it was stopped"
            )
        if receiver in ready:
            try:
                payload = receiver.recv_bytes(maxlength=MAX_RESULT_BYTES)
            except (EOFError, OSError):
                payload = None
        process.join(timeout=5)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        receiver.close()
    exitcode = process.exitcode
    process.close()
    if payload is None:
        raise failure(_death_message(exitcode, limits))
    return _result(payload, failure)


def _death_message(exitcode: int | None, limits: ValidationLimits) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else exitcode
        return (
            f"the process checking the file was killed ({name}): the file is corrupt, or "
            f"needs more than the {limits.memory_bytes} bytes of memory allowed"
        )
    return f"the process checking the file ended without an answer (exit code {exitcode})"


def _result(payload: bytes, failure: type[RobustError]) -> dict[str, Any]:
    try:
        result = json.loads(payload)
    except ValueError:
        raise failure("the process checking the file gave an unreadable answer") from None
    if not isinstance(result, dict):
        raise failure("the process checking the file gave an unreadable answer")
    if result.get("ok"):
        return result
    message = str(result.get("message") or "the file was refused")[:MAX_MESSAGE_CHARS]
    field = result.get("field")
    cls = _REPORTABLE.get(str(result.get("error")), failure)
    if issubclass(cls, InvalidRequest | ValidationTimeout):
        raise cls(message, field=field)
    error = cls(message)
    # The engine's errors have no field of their own; the API reports it when present.
    error.field = field  # type: ignore[attr-defined]
    raise error


# -- the child's side -----------------------------------------------------------------------


def child_main(
    request: dict[str, Any], sender: Connection, memory_bytes: int, timeout_seconds: float
) -> None:
    """Entry point of the child: limit itself, check the file, send JSON, exit."""
    _isolate(memory_bytes, timeout_seconds)
    try:
        if request["kind"] == "model":
            result: dict[str, Any] = {"ok": True, "model": _check_model(request)}
        else:
            result = {"ok": True, "dataset": _check_dataset(request)}
    except InvalidRequest as exc:
        result = _refusal("InvalidRequest", exc.message, exc.field)
    except RobustError as exc:
        result = _refusal(type(exc).__name__, str(exc), "file")
    except MemoryError:
        result = _refusal(
            "ValidationTimeout",
            f"checking the file needed more than the {memory_bytes} bytes of memory allowed",
            "file",
        )
    except Exception as exc:  # a hostile file may break any reader in any way
        result = _refusal("", f"{type(exc).__name__}: {exc}", "file")
    sender.send_bytes(json.dumps(result, default=str).encode()[:MAX_RESULT_BYTES])
    sender.close()


def _refusal(error: str, message: str, field: str | None) -> dict[str, Any]:
    return {"ok": False, "error": error, "message": message[:MAX_MESSAGE_CHARS], "field": field}


def _isolate(memory_bytes: int, timeout_seconds: float) -> None:
    # Nothing the file does may reach the GPU, the API's logs, or its secrets.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    for name in [name for name in os.environ if name.startswith("ROBUSTIFY_")]:
        del os.environ[name]
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    import torch

    torch.set_num_threads(1)
    # The limit is on growth beyond what the imports already mapped: CUDA builds of torch map
    # several GiB of address space for their libraries alone, which a plain RLIMIT_AS of a few
    # GiB would refuse before any file is read. One thread keeps malloc's per-thread arenas
    # (64 MiB of address space each) from eating the budget.
    baseline = _address_space_bytes()
    if baseline is not None:
        _set_limit(resource.RLIMIT_AS, baseline + memory_bytes)
    _set_limit(resource.RLIMIT_CPU, int(timeout_seconds) + 2)
    _set_limit(resource.RLIMIT_CORE, 0)


def _address_space_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _set_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, hard))
    except (ValueError, OSError):
        log.warning("could not set resource limit %s", which)


def _check_model(request: dict[str, Any]) -> dict[str, Any]:
    from core.robust.modelio import detect_format, load_model

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
    from core.robust.architectures import build_architecture, list_architectures

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
    from core.robust.data import load_dataset

    path = Path(request["path"])
    data = load_dataset(path)
    return {
        "kind": "npz" if path.name.lower().endswith(".npz") else "imagefolder",
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "train_size": len(data.train),
        "test_size": len(data.test),
    }
