"""Domain errors of the service. The engine's own (ModelLoadError, DatasetError, ...) live in
core.robust.errors and are re-exported here so adapters have one place to map from."""

from __future__ import annotations

from core.robust.errors import (
    DatasetError,
    InvalidConfig,
    ModelLoadError,
    RobustError,
    TrainingDiverged,
    UnsafeArchiveError,
)

__all__ = [
    "Conflict",
    "DatasetError",
    "InvalidConfig",
    "InvalidRequest",
    "ModelLoadError",
    "NotFound",
    "RobustError",
    "ServiceError",
    "StorageFull",
    "TooLarge",
    "TrainingDiverged",
    "Unauthorized",
    "UnsafeArchiveError",
    "ValidationTimeout",
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


class ValidationTimeout(ServiceError):
    """Checking an upload took longer than allowed (or ran out of memory)."""


class StorageFull(ServiceError):
    """The artifact store has no room left (its disk is full, or its quota is spent)."""
