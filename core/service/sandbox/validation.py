"""Check an uploaded model or dataset file with the engine, in a sandboxed child process with a
time and a memory limit, never in the calling (API) process.

A TorchScript archive is a program and a hostile pickle or archive is built to hurt whoever
opens it, so the file is opened only in a child that lives in the sandbox of
core.service.sandbox.runner (no file but its own input, no network, no inherited secrets) and can
be killed: it gets
`validation_timeout_seconds` of wall time and `validation_memory_bytes` of address space beyond
what the engine's imports already hold, and hands back plain JSON.

Importing torch takes seconds, so one sandboxed checker is kept warm: it has imported the
engine and waits for exactly one request, then exits; a fresh one is started behind it. Each
checker's input folder is bound read-only into its sandbox when it starts; the upload is linked
(or copied) into it when its request comes.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.robust.datasets.loading import MAX_CLASSES
from core.service.config import Settings
from core.service.errors import (
    DatasetError,
    InvalidConfig,
    InvalidRequest,
    ModelLoadError,
    RobustError,
    UnsafeArchiveError,
    ValidationTimeout,
)
from core.service.sandbox.runner import Sandbox, SandboxedProcess, sandbox_from_settings

log = logging.getLogger(__name__)

MAX_RESULT_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 2000
CHILD_MODULE = "core.service.sandbox.validation_child"
# A warm checker imports torch before it says it is ready; that start never counts against the
# check's own timeout, but a checker that cannot start in this long is given up.
START_TIMEOUT_SECONDS = 300.0
READY = b"ready\n"

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


def validate_model_file(
    path: Path, declaration: ModelDeclaration, limits: ValidationLimits
) -> ValidatedModel:
    """Load the model as the worker will (format detection, one forward pass on the declared
    input) in a child process. Raises ModelLoadError, InvalidRequest (a declared field that does
    not fit the file; `.field` names it) or ValidationTimeout."""
    request = {"kind": "model", "path": str(path), **declaration.__dict__}
    result = _run_in_child(request, limits, failure=ModelLoadError)
    return _answer(ValidatedModel, result.get("model"), failure=ModelLoadError)


def validate_dataset_file(path: Path, limits: ValidationLimits) -> ValidatedDataset:
    """Load the dataset as the worker will (archive guards, shapes, labels) in a child process.
    Raises DatasetError (UnsafeArchiveError for a hostile archive) or ValidationTimeout."""
    result = _run_in_child({"kind": "dataset", "path": str(path)}, limits, failure=DatasetError)
    return _answer(ValidatedDataset, result.get("dataset"), failure=DatasetError)


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


class _Checker:
    """One sandboxed child that has imported the engine (or is doing so) and will answer one
    request about the file placed in its read-only input folder."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.folder = Path(tempfile.mkdtemp(prefix="robustify-check-"))
        self.inbox = self.folder / "input"
        self.inbox.mkdir()
        (self.folder / "scratch").mkdir()
        try:
            self.child: SandboxedProcess = sandbox.start(
                [sys.executable, "-m", CHILD_MODULE],
                job_dir=self.folder,
                read_only=[self.inbox],
                environment={"TMPDIR": str(self.folder / "scratch")},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.started = time.monotonic()
        self.ready = False

    def alive(self) -> bool:
        return self.child.process.poll() is None

    def wait_ready(self) -> bool:
        if not self.ready:
            line = _read_line(self.child.process, deadline=self.started + START_TIMEOUT_SECONDS)
            self.ready = line == READY
        return self.ready

    def check(self, file: Path, request: dict[str, Any], limits: ValidationLimits) -> bytes | None:
        """Hand the file and the request over; the answer line, or None if the child died or
        the time ran out (then `timed_out` says which)."""
        placed = self.inbox / ("upload" + "".join(file.suffixes[-2:]))
        _link_or_copy(file, placed)
        message = {**request, "path": str(placed), "limits": _limit_fields(limits)}
        stdin = self.child.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
        except OSError:
            return None
        deadline = time.monotonic() + limits.timeout_seconds
        self.timed_out = False
        line = _read_line(self.child.process, deadline=deadline)
        if line is None and time.monotonic() >= deadline:
            self.timed_out = True
        return line

    def close(self) -> None:
        self.child.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _limit_fields(limits: ValidationLimits) -> dict[str, float]:
    return {"memory_bytes": limits.memory_bytes, "timeout_seconds": limits.timeout_seconds}


def _link_or_copy(source: Path, target: Path) -> None:
    # A hard link is free; the checker's input folder is read-only inside its sandbox, so the
    # stored file cannot be changed through it. Another filesystem needs a copy.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _read_line(process: subprocess.Popen[bytes], *, deadline: float) -> bytes | None:
    """One line from the child's stdout, at most MAX_RESULT_BYTES, before `deadline`."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buffer += chunk
            if b"\n" in buffer:
                return bytes(buffer[: buffer.index(b"\n") + 1])
            if len(buffer) > MAX_RESULT_BYTES:
                return None


class _CheckerPool:
    """Warm checkers, one kept ready per sandbox. They are started from one long-lived thread:
    bubblewrap's --die-with-parent follows the thread that started it, which must outlive it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.warm: dict[Sandbox, _Checker] = {}
        self.starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robustify-checker")

    def _start(self, sandbox: Sandbox) -> _Checker:
        return self.starter.submit(_Checker, sandbox).result()

    def take(self, sandbox: Sandbox) -> _Checker:
        with self.lock:
            checker = self.warm.pop(sandbox, None)
        if checker is None or not checker.alive():
            if checker is not None:
                checker.close()
            checker = self._start(sandbox)
        self.refill(sandbox)
        return checker

    def refill(self, sandbox: Sandbox) -> None:
        def start_one() -> None:
            with self.lock:
                if sandbox in self.warm:
                    return
            checker = _Checker(sandbox)
            with self.lock:
                if sandbox in self.warm:
                    checker.close()
                else:
                    self.warm[sandbox] = checker

        self.starter.submit(start_one)

    def close(self) -> None:
        with self.lock:
            checkers, self.warm = list(self.warm.values()), {}
        for checker in checkers:
            checker.close()


_pool = _CheckerPool()


def start_helper(sandbox: Sandbox) -> None:
    """Start a warm checker now (it imports torch: seconds), so the first upload need not
    wait. Optional: the first check starts one otherwise."""
    _pool.refill(sandbox)


def stop_helpers() -> None:
    """End the warm checkers (at exit; they also die with this process)."""
    _pool.close()


def _run_in_child(
    request: dict[str, Any], limits: ValidationLimits, *, failure: type[RobustError]
) -> dict[str, Any]:
    file = Path(request.pop("path"))
    if request["kind"] == "model":
        from core.robust.models.modelio import detect_format  # reads the zip's names, runs nothing

        try:
            detected = detect_format(file)
        except ModelLoadError as exc:
            exc.field = "file"  # type: ignore[attr-defined]  # as the child reports it
            raise
        limits.sandbox.check_may_run(detected)
    checker = _pool.take(limits.sandbox)
    try:
        if not checker.wait_ready():
            raise failure("the sandboxed process that checks files could not start")
        payload = checker.check(file, request, limits)
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
    if issubclass(cls, InvalidRequest | ValidationTimeout):
        raise cls(message, field=field)
    error = cls(message)
    # The engine's errors have no field of their own; the API reports it when present.
    error.field = field  # type: ignore[attr-defined]
    raise error
