"""The answers about models and datasets (uploaded, hardened, builtin)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import from_row
from core.robust.datasets.catalog import BuiltinDataset
from core.robust.models.formats import FORMATS
from core.service.tables import Dataset, Model


class ModelOut(BaseModel):
    id: str
    name: str
    format: Literal[FORMATS]  # type: ignore[valid-type]
    architecture: str | None
    input_shape: list[int]
    num_classes: int
    mean: list[float] | None
    std: list[float] | None
    sha256: str
    size_bytes: int
    source_job_id: str | None = Field(description="set on a model a hardening job produced")
    warnings: list[str]
    created_at: datetime
    content_url: str

    @classmethod
    def of(cls, row: Model) -> ModelOut:
        return from_row(
            cls,
            row,
            warnings=list(row.warnings or []),
            content_url=f"/v1/models/{row.id}/content",
        )


class DatasetOut(BaseModel):
    id: str
    name: str
    builtin: bool
    kind: str = Field(description="builtin, npz or imagefolder")
    input_shape: list[int]
    num_classes: int
    train_size: int | None
    test_size: int | None
    file_name: str | None
    sha256: str | None
    size_bytes: int | None
    description: str | None
    created_at: datetime | None

    @classmethod
    def of(cls, entry: Dataset | BuiltinDataset) -> DatasetOut:
        if isinstance(entry, BuiltinDataset):
            return cls(
                id=entry.name,
                name=entry.name,
                builtin=True,
                kind="builtin",
                input_shape=list(entry.input_shape),
                num_classes=entry.num_classes,
                train_size=None,
                test_size=None,
                file_name=None,
                sha256=None,
                size_bytes=None,
                description=entry.description,
                created_at=None,
            )
        return from_row(cls, entry, builtin=False, description=None)
