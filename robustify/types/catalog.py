"""Models and datasets as the API answers them (`ModelOut`, `DatasetOut`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from robustify.decoding import ApiObject


@dataclass(frozen=True, kw_only=True)
class Model(ApiObject):
    id: str
    name: str
    format: str  # torchscript, state_dict or safetensors
    architecture: str | None
    input_shape: list[int]
    num_classes: int
    mean: list[float] | None
    std: list[float] | None
    sha256: str
    size_bytes: int
    source_job_id: str | None  # set on a model a hardening job produced
    warnings: list[str]
    created_at: datetime
    content_url: str
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class Dataset(ApiObject):
    id: str  # ds_… or builtin:<name>
    name: str
    builtin: bool
    kind: str  # builtin, npz or imagefolder
    input_shape: list[int]
    num_classes: int
    train_size: int | None
    test_size: int | None
    file_name: str | None  # the uploaded file's name (None: a builtin one)
    sha256: str | None
    size_bytes: int | None
    description: str | None
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)
