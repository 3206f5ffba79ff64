"""A job as the API answers it (`JobOut` and its `JobMetrics`), its events and checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from robustify.decoding import ApiObject
from robustify.types.evaluation import Evaluation

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, kw_only=True)
class EpochRecord(ApiObject):
    """One epoch of fine-tuning (metrics.epochs, and the data of an `epoch` event)."""

    epoch: int
    train_loss: float
    train_robust_accuracy: float | None
    lr: float = 0.0
    epsilon: float | None
    val_clean_accuracy: float | None
    val_robust_accuracy: float | None
    seconds: float | None


@dataclass(frozen=True, kw_only=True)
class Progress(ApiObject):
    phase: str | None = None  # evaluating_before, probing_lr, training, evaluating_after, done
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps_per_epoch: int | None = None
    fraction: float = 0.0  # of the training, 0 to 1
    loss: float | None = None  # the last batch's
    eta_seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class JobError(ApiObject):
    code: str = ""
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class JobMetrics(ApiObject):
    before: Evaluation | None = None
    after: Evaluation | None = None
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    # harden jobs that succeeded: "improved", "clean_dropped" or "not_improved" (else None)
    verdict: str | None = None
    validation: dict[str, Any] | None = None  # {"source": "train_holdout" | "uploaded", "size": N}
    peak_lr: float | None = None  # the rate trained at: the one asked for, or the probe's choice
    optimizer: str | None = None  # the one trained with: "sgd" or "adamw" ("auto" resolved)
    # The one trained with: "none", "standard" or "imagenet" (the data's choice for None)
    augmentation: str | None = None
    precision: str | None = None  # the training step's: "fp32", "bf16" or "fp16"
    lr_probe: dict[str, Any] | None = None  # the probe's rates, scores, choice and cost
    guards: list[dict[str, Any]] = field(default_factory=list)  # a step back, a stop
    # When no epoch kept clean accuracy: the mix of the best epoch's weights with the uploaded
    # ones handed back (its from_epoch, fraction, scores, the mixes tried); None: no search
    interpolation: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Job(ApiObject):
    id: str
    kind: str  # harden or evaluate
    status: str  # queued, running, succeeded, failed, cancelled
    model_id: str | None
    dataset: str
    threat_model: dict[str, Any]
    hyperparameters: dict[str, Any]
    evaluation: dict[str, Any]
    resources: dict[str, Any] = field(default_factory=dict)  # world_size: its processes
    seed: int = 0
    progress: Progress = field(default_factory=Progress)
    metrics: JobMetrics = field(default_factory=JobMetrics)
    result_model_id: str | None
    error: JobError | None
    manifest: dict[str, Any]
    attempts: int = 0
    cancel_requested: bool = False
    created_at: datetime | None
    updated_at: datetime | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, kw_only=True)
class Event(ApiObject):
    id: int
    type: str  # queued, started, evaluated, epoch, succeeded, failed, cancelled, ...
    message: str = ""
    data: dict[str, Any]
    created_at: datetime

    @property
    def epoch(self) -> EpochRecord | None:
        """The epoch's metrics, for an `epoch` event."""
        return EpochRecord.from_json(self.data) if self.type == "epoch" else None


@dataclass(frozen=True, kw_only=True)
class Checkpoint(ApiObject):
    epoch: int
    metrics: dict[str, Any]  # the epoch's validation metrics
    sha256: str
    size_bytes: int
    created_at: datetime
    content_url: str
