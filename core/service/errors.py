"""Domain errors of the service, and the one table of error codes that the API answers with and
that a failed job records. The engine's own errors (ModelLoadError, DatasetError, ...) live in
core.robust.errors and are re-exported here so adapters have one place to map from."""

from __future__ import annotations

from typing import Final

from core.robust.errors import (
    DatasetError,
    InvalidConfig,
    ModelLoadError,
    RobustError,
    TrainingDiverged,
    UnsafeArchiveError,
)

# The domain errors (a test checks each has its entry in the table below).
__all__ = [
    "Conflict",
    "DatasetError",
    "InvalidConfig",
    "InvalidRequest",
    "LimitReached",
    "ModelLoadError",
    "NotFound",
    "RobustError",
    "ServiceError",
    "ServiceUnavailable",
    "StorageFull",
    "StoredBytesLimit",
    "TooLarge",
    "TooManyQueuedJobs",
    "TrainingDiverged",
    "Unauthorized",
    "UnsafeArchiveError",
    "ValidationTimeout",
    "WebhookTargetRefused",
]


class ServiceError(Exception):
    """Base of the service's own errors. `field` names the request field at fault, if any."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    """No such resource for this owner (another owner's resource is not found either)."""


class Unauthorized(ServiceError):
    """No API key, or one that is unknown or revoked."""


class Conflict(ServiceError):
    """The request clashes with the resource's state (e.g. an idempotency key reused)."""


class TooLarge(ServiceError):
    """An upload went past its size limit."""


class InvalidRequest(ServiceError):
    """A request that is well-formed but not acceptable (e.g. a dataset that doesn't fit)."""


class WebhookTargetRefused(InvalidRequest):
    """A webhook URL the service will not post to: malformed, not http(s), or (SSRF) a host on
    a loopback, private, link-local, multicast or reserved address."""

    def __init__(self, message: str, *, field: str | None = "url") -> None:
        super().__init__(message, field=field)


class ValidationTimeout(ServiceError):
    """Checking an upload took longer than allowed (or ran out of memory)."""


class ServiceUnavailable(ServiceError):
    """The service cannot take the request now (it is shutting down); try again later."""


class StorageFull(ServiceError):
    """The artifact store has no room left (its disk is full, or its quota is spent)."""


class LimitReached(ServiceError):
    """The owner is at one of its limits (settings max_*_per_owner): 429, with Retry-After."""

    def __init__(
        self, message: str, *, field: str | None = None, retry_after_seconds: int = 60
    ) -> None:
        super().__init__(message, field=field)
        self.retry_after_seconds = retry_after_seconds


class TooManyQueuedJobs(LimitReached):
    """The owner already has max_queued_jobs_per_owner jobs waiting to run."""


class StoredBytesLimit(LimitReached):
    """The owner's models, datasets and job results already fill max_stored_bytes_per_owner."""


# The one table: each domain error -> (the HTTP status the API answers, its code). The code is
# the same on a failed job. A class not listed maps through its nearest listed base (MRO order);
# a test checks that every domain error class is listed here itself.
ERROR_TABLE: dict[type[Exception], tuple[int, str]] = {
    ServiceError: (400, "bad_request"),
    Unauthorized: (401, "unauthorized"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    TooLarge: (413, "too_large"),
    InvalidRequest: (422, "invalid_request"),
    ValidationTimeout: (422, "validation_timeout"),
    WebhookTargetRefused: (422, "webhook_target_refused"),
    RobustError: (422, "engine_error"),
    ModelLoadError: (422, "invalid_model"),
    DatasetError: (422, "invalid_dataset"),
    UnsafeArchiveError: (422, "unsafe_archive"),
    InvalidConfig: (422, "invalid_config"),
    TrainingDiverged: (422, "training_diverged"),
    LimitReached: (429, "limit_reached"),
    TooManyQueuedJobs: (429, "too_many_queued_jobs"),
    StoredBytesLimit: (429, "stored_bytes_limit"),
    ServiceUnavailable: (503, "service_unavailable"),
    StorageFull: (507, "storage_full"),
}


class JobCode:
    """The codes no domain error carries: how else a job can end (internal_error is also the
    API's answer to an unexpected exception, its 500)."""

    CANCELLED: Final = "cancelled"
    TOO_MANY_ATTEMPTS: Final = "too_many_attempts"
    INTERNAL_ERROR: Final = "internal_error"
    ENGINE_CRASHED: Final = "engine_crashed"
    ENGINE_PROTOCOL_ERROR: Final = "engine_protocol_error"
    ENGINE_OUTPUT_TOO_LARGE: Final = "engine_output_too_large"
    OUT_OF_MEMORY: Final = "out_of_memory"
    MODEL_ERROR: Final = "model_error"


JOB_CODES: dict[str, str] = {
    JobCode.CANCELLED: "cancelled before it ran, while running, or once its worker stopped",
    JobCode.TOO_MANY_ATTEMPTS: "its worker died on every attempt without finishing it",
    JobCode.INTERNAL_ERROR: "an unexpected error of the service",
    JobCode.ENGINE_CRASHED: "the job's engine process died (killed, or out of memory?)",
    JobCode.ENGINE_PROTOCOL_ERROR: "the job's engine process broke the protocol and was stopped",
    JobCode.ENGINE_OUTPUT_TOO_LARGE: "the job's engine wrote a file larger than its limit",
    JobCode.OUT_OF_MEMORY: "the job's engine ran out of memory (the GPU's, or its own limit)",
    JobCode.MODEL_ERROR: "the model's own TorchScript code failed while running in the sandbox",
}

# Every code a domain error or a job's end can carry.
ERROR_CODES = frozenset({*(code for _, code in ERROR_TABLE.values()), *JOB_CODES})


def status_and_code(error: BaseException) -> tuple[int, str]:
    """The (HTTP status, code) of a domain error: its own entry, or its nearest base's."""
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    raise LookupError(f"{type(error).__name__} has no entry in the error table")


def error_code(error: BaseException) -> str:
    """The code of a domain error, the same in the API's answer and on a failed job."""
    return status_and_code(error)[1]


def error_body(code: str, message: str) -> dict[str, str]:
    """An error as data: a failed job's `error`, and the core of the API's error shape."""
    return {"code": code, "message": message}
