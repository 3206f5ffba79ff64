"""The error a job's engine ends with when an exception leaves its run: the engine's own errors
by core.service.errors' table, running out of memory and the model's own code failing by name,
anything else as an internal error. The message leads with the reason, within the protocol's
length."""

from __future__ import annotations

from typing import cast

from core.service.engine.protocol import MAX_MESSAGE_CHARS, Failed, FailureCode
from core.service.errors import JobCode, RobustError, error_code


def failure(exc: BaseException, *, model_format: str) -> Failed:
    """The error an exception ends the job with: the engine's own errors by their kind."""
    import torch

    code: FailureCode
    message = str(exc)
    if isinstance(exc, RobustError):
        code = cast(FailureCode, error_code(exc))
    elif isinstance(exc, torch.cuda.OutOfMemoryError):
        code, message = JobCode.OUT_OF_MEMORY, f"the GPU ran out of memory: {exc}; lower batch_size"
    elif isinstance(exc, MemoryError) or "can't allocate memory" in message:
        code = JobCode.OUT_OF_MEMORY
        message = (
            "the job's engine ran out of memory (its limit is the worker's job_memory_bytes); "
            f"lower batch_size: {message}"
        )
    elif isinstance(exc, RuntimeError) and model_format == "torchscript":
        code = JobCode.MODEL_ERROR
        message = (
            "the model's TorchScript code failed while running in the job's sandbox (which "
            f"reaches no file outside the job's folder and no network): {message}"
        )
    else:
        code, message = JobCode.INTERNAL_ERROR, f"{type(exc).__name__}: {message}"
    message = _reason_first(message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 15] + " [… truncated]"
    return Failed(code=code, message=message)


def _reason_first(message: str) -> str:
    """TorchScript puts the failing op's own error last, after its tracebacks: bring it up to
    the first line, where a reader (and a truncation) sees it."""
    marker = "The following operation failed in the TorchScript interpreter."
    head, found, traceback = message.partition(marker)
    lines = [line.strip() for line in traceback.splitlines() if line.strip()]
    if not found or not lines:
        return message
    return f"{head.rstrip()} {lines[-1]}\n{found}{traceback}"
