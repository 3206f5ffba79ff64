"""Check an uploaded model or dataset file with the engine, in a sandboxed child process with a
time and a memory limit, never in the calling (API) process.

A TorchScript archive is a program and a hostile pickle or archive is built to hurt whoever
opens it, so the file is opened only in a child that lives in the sandbox of
core.service.sandbox.runner (no file but its own input, no network, no inherited secrets) and can
be killed: it gets `validation_timeout_seconds` of wall time and `validation_memory_bytes` of
address space beyond what the engine's imports already hold, and hands back plain JSON. The
children are kept warm by core.service.sandbox.checkers, owned by a FileChecker.
"""

from __future__ import annotations

import json
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.robust.datasets.catalog import MAX_CLASSES
from core.robust.models.formats import detect_format
from core.service.config import Settings
from core.service.errors import (
    DatasetError,
    InvalidConfig,
    InvalidRequest,
    ModelLoadError,
    RobustError,
    ServiceError,
    UnsafeArchiveError,
    ValidationTimeout,
)
from core.service.sandbox.checkers import CheckerPool
from core.service.sandbox.runner import Sandbox, sandbox_from_settings

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000

# Errors a child may report, by name: the parent re-raises only these classes.
_REPORTABLE: dict[str, type[RobustError | ServiceError]] = {
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
    """How a check runs: its wall time, its memory, and the sandbox it lives in."""

    timeout_seconds: float
    memory_bytes: int
    sandbox: Sandbox = field(default_factory=lambda: Sandbox(kind="none"))

    @classmethod
    def from_settings(cls, settings: Settings) -> ValidationLimits:
        return cls(
            timeout_seconds=settings.validation_timeout_seconds,
            memory_bytes=settings.validation_memory_bytes,
            sandbox=sandbox_from_settings(settings),
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


MAX_SAMPLES = 10**9


def _answer(cls: type[Any], raw: Any, *, failure: type[RobustError]) -> Any:
    """The child's answer as `cls`, its every field checked: the child ran the user's code,
    so nothing it says is taken on trust."""
    problem = _answer_problem(raw)
    if problem is None:
        try:
            return cls(**raw)
        except TypeError as exc:
            problem = str(exc)
    raise failure(f"the process checking the file gave an invalid answer ({problem})")


def _answer_problem(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return "not an object"
    shape = raw.get("input_shape")
    if not (
        isinstance(shape, list) and len(shape) == 3 and all(_int_in(d, 1, 4096) for d in shape)
    ):
        return "input_shape"
    if not _int_in(raw.get("num_classes"), 1, MAX_CLASSES):
        return "num_classes"
    for name in ("train_size", "test_size"):
        if name in raw and not _int_in(raw[name], 0, MAX_SAMPLES):
            return name
    for name in ("mean", "std"):
        values = raw.get(name)
        if values is not None and not (
            isinstance(values, list)
            and len(values) == shape[0]
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            return name
    for name in ("format", "architecture", "kind"):
        if raw.get(name) is not None and not (isinstance(raw[name], str) and len(raw[name]) <= 200):
            return name
    return None


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# -- the parent's side ----------------------------------------------------------------------


class FileChecker:
    """Checks uploaded files, each in a sandboxed child with `limits`, one child kept warm.
    The API's startup creates it and closes it at shutdown; nothing of it exists at import."""

    def __init__(self, limits: ValidationLimits) -> None:
        self.limits = limits
        self.pool = CheckerPool(limits.sandbox)

    def start(self) -> None:
        """Start a warm checker now (it imports torch: seconds), so the first upload need not
        wait. Optional: the first check starts one otherwise."""
        self.pool.refill()

    def close(self) -> None:
        """End the warm checker (it also dies with this process)."""
        self.pool.close()

    def check_model(self, path: Path, declaration: ModelDeclaration) -> ValidatedModel:
        """Load the model as the worker will (format detection, one forward pass on the
        declared input) in a child process. Raises ModelLoadError, InvalidRequest (a declared
        field that does not fit the file; `.field` names it) or ValidationTimeout."""
        _check_may_run(path, self.limits.sandbox)
        request = {"kind": "model", **declaration.__dict__}
        result = self._run_in_child(path, request, failure=ModelLoadError)
        return _answer(ValidatedModel, result.get("model"), failure=ModelLoadError)

    def check_dataset(self, path: Path) -> ValidatedDataset:
        """Load the dataset as the worker will (archive guards, shapes, labels) in a child
        process. Raises DatasetError (UnsafeArchiveError for a hostile archive) or
        ValidationTimeout."""
        result = self._run_in_child(path, {"kind": "dataset"}, failure=DatasetError)
        return _answer(ValidatedDataset, result.get("dataset"), failure=DatasetError)

    def _run_in_child(
        self, file: Path, request: dict[str, Any], *, failure: type[RobustError]
    ) -> dict[str, Any]:
        limits = self.limits
        checker = self.pool.take()
        try:
            if not checker.wait_ready():
                raise failure("the sandboxed process that checks files could not start")
            message = {**request, "limits": _limit_fields(limits)}
            payload = checker.check(file, message, timeout_seconds=limits.timeout_seconds)
            if payload is None and checker.timed_out:
                raise ValidationTimeout(
                    f"checking the file took longer than {limits.timeout_seconds:g} seconds; "
                    "it was stopped"
                )
        finally:
            checker.close()
        if payload is None:
            raise failure(_death_message(checker.child.process.returncode, limits))
        return _result(payload, failure)


def _check_may_run(file: Path, sandbox: Sandbox) -> None:
    """Refuse a TorchScript program before any child opens it, where there is no sandbox.
    Detecting the format reads the archive's names; it runs nothing of the file."""
    try:
        detected = detect_format(file)
    except ModelLoadError as exc:
        exc.field = "file"  # as the child reports it
        raise
    sandbox.check_may_run(detected)


def _limit_fields(limits: ValidationLimits) -> dict[str, float]:
    return {"memory_bytes": limits.memory_bytes, "timeout_seconds": limits.timeout_seconds}


def _death_message(exitcode: int | None, limits: ValidationLimits) -> str:
    # Killed by a signal: a negative code from Popen, or 128 + the signal through bubblewrap.
    number = -exitcode if exitcode is not None and exitcode < 0 else None
    if exitcode is not None and exitcode > 128:
        number = exitcode - 128
    if number is not None:
        name = signal.Signals(number).name if number in signal.valid_signals() else number
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
    field = str(field)[:100] if field is not None else None
    cls = _REPORTABLE.get(str(result.get("error")), failure)
    raise cls(message, field=field)
