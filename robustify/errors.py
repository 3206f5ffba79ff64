"""The SDK's exceptions: the API said no (`ApiError`), could not be reached (`ApiUnavailable`),
answered what the SDK cannot read (`InvalidResponse`), or sent bytes that fail their checksum."""

from __future__ import annotations


class RobustifyError(Exception):
    """Base of the SDK's exceptions."""


class ApiError(RobustifyError):
    """The API answered with an error: its HTTP status and the body's code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def __str__(self) -> str:
        where = f", field {self.field}" if self.field else ""
        return f"{self.message} ({self.code}{where})"

    def __repr__(self) -> str:
        return (
            f"ApiError(status={self.status}, code={self.code!r}, message={self.message!r}, "
            f"field={self.field!r})"
        )


class ApiUnavailable(RobustifyError):
    """No answer from the API at `url`: not started, wrong address, or the connection broke."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach robustify at {url}: {reason}")
        self.url, self.reason = url, reason


class ChecksumMismatch(RobustifyError):
    """A download's bytes do not hash to the sha256 the server announced for them."""


class InvalidResponse(RobustifyError):
    """The API's answer is not what the SDK reads: not JSON, not a stream, or a field missing."""
