"""The answers about jobs: the job with its metrics, its events and its checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas.common import from_row
from core.service.jobs.lifecycle import STATUSES
from core.service.jobs.verdict import VERDICTS
from core.service.tables import Checkpoint, Job, JobEvent

JobStatus = Literal[STATUSES]  # type: ignore[valid-type]


class JobMetrics(BaseModel):
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    epochs: list[dict[str, Any]] = Field(default_factory=list)
    best_epoch: int | None = None
    verdict: Literal[VERDICTS] | None = Field(  # type: ignore[valid-type]
        None,
        description="harden jobs that succeeded: improved (test robust accuracy up by more than "
        "its noise, clean accuracy within max_clean_drop), clean_dropped or not_improved",
    )
    validation: dict[str, Any] | None = Field(
        None,
        description='harden jobs: the split the best epoch was chosen on, {"source": '
        '"train_holdout" | "uploaded", "size": N}; never the test split',
    )
    peak_lr: float | None = Field(
        None, description="harden jobs: the rate trained at (the one asked for, or the probe's)"
    )
    optimizer: str | None = Field(
        None, description='harden jobs: the one trained with, "sgd" or "adamw" ("auto" resolved)'
    )
    augmentation: str | None = Field(
        None,
        description='harden jobs: the one trained with, "none", "standard" or "imagenet" '
        '("auto" resolved by the data)',
    )
    precision: str | None = Field(
        None,
        description='harden jobs: the training step\'s, "fp32", "bf16" or "fp16" ("auto" resolved '
        "on the worker's device)",
    )
    lr_probe: dict[str, Any] | None = Field(
        None,
        description="the learning-rate probe (peak_lr null): each rate tried with its validation "
        "scores, the one chosen and why, and what it cost",
    )
    guards: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the guards' decisions while training: a step back, or the early stop",
    )
    interpolation: dict[str, Any] | None = Field(
        None,
        description="when no epoch kept validation clean accuracy (weight_interpolation): "
        "from_epoch, the fraction of the way from the uploaded weights to its weights handed "
        "back (null: no mix kept clean accuracy, the epoch's weights stayed), the validation "
        "accuracies of what was handed back, each mix tried and a message",
    )

    @classmethod
    def of(cls, metrics: dict[str, Any]) -> JobMetrics:
        """The declared metrics of a job's stored ones (anything else stored stays out)."""
        declared = {name: metrics.get(name) for name in cls.model_fields}
        return cls.model_validate(
            {**declared, "epochs": declared["epochs"] or [], "guards": declared["guards"] or []}
        )


class JobOut(BaseModel):
    id: str
    kind: str
    status: JobStatus
    model_id: str | None
    dataset: str
    threat_model: dict[str, Any]
    hyperparameters: dict[str, Any]
    evaluation: dict[str, Any]
    resources: dict[str, Any] = Field(description="world_size: the processes it runs across")
    seed: int
    progress: dict[str, Any] = Field(
        description="phase, epoch, epochs, step, steps_per_epoch, fraction, eta_seconds"
    )
    metrics: JobMetrics
    result_model_id: str | None
    error: dict[str, Any] | None
    manifest: dict[str, Any]
    attempts: int
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        config = job.config or {}
        return from_row(
            cls,
            job,
            threat_model=config.get("threat_model", {}),
            hyperparameters=config.get("hyperparameters", {}),
            evaluation=config.get("evaluation", {}),
            resources=config.get("resources", {"world_size": 1}),
            seed=config.get("seed", 0),
            progress=job.progress or {},
            metrics=JobMetrics.of(job.metrics or {}),
            manifest=job.manifest or {},
        )


class EventOut(BaseModel):
    id: int
    type: str
    message: str
    data: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, event: JobEvent) -> EventOut:
        return from_row(cls, event, data=event.data or {})


class CheckpointOut(BaseModel):
    epoch: int
    metrics: dict[str, Any]
    sha256: str = Field(description="of the resumable checkpoint (weights, optimizer, RNG)")
    size_bytes: int
    created_at: datetime
    content_url: str = Field(description="the epoch's weights in the uploaded model's format")

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointOut:
        return from_row(
            cls,
            checkpoint,
            metrics=checkpoint.metrics or {},
            content_url=f"/v1/jobs/{checkpoint.job_id}/checkpoints/{checkpoint.epoch}/content",
        )
