"""What every part of the contract shares: the error shape, pages, ids, the strict request base,
and response models read from rows."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
ResponseT = TypeVar("ResponseT", bound=BaseModel)

# Ids are ours (`mdl_…`, `builtin:digits`): anything else can only be not found, and must never
# reach a query as text PostgreSQL refuses (a NUL byte).
ID_PATTERN = r"^[A-Za-z0-9_:.\-]+$"


class StrictRequest(BaseModel):
    # A misspelt knob ("epoch") is an error that names it, not a silently ignored field.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


class HealthOut(BaseModel):
    status: str


def from_row(cls: type[ResponseT], row: object, **computed: Any) -> ResponseT:
    """`cls` with each field read from the row's attribute of the same name, but for the fields
    `computed` gives (values derived from the row, or an empty value for a null column)."""
    values = {name: getattr(row, name) for name in cls.model_fields if name not in computed}
    return cls.model_validate({**values, **computed})
