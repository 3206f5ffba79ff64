"""What the API answers, as typed dataclasses, and the options of a job as the SDK takes them.

Each result keeps the JSON it came from in `raw` (fields a newer server adds are there too).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _floats(value: Any) -> list[float] | None:
    return [float(each) for each in value] if value is not None else None


# -- models and datasets --------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    format: str
    architecture: str | None
    input_shape: list[int]
    num_classes: int
    mean: list[float] | None
    std: list[float] | None
    sha256: str
    size_bytes: int
    source_job_id: str | None  # set on a model a hardening job produced
    warnings: list[str]
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(
            id=data["id"],
            name=data["name"],
            format=data["format"],
            architecture=data.get("architecture"),
            input_shape=list(data["input_shape"]),
            num_classes=int(data["num_classes"]),
            mean=_floats(data.get("mean")),
            std=_floats(data.get("std")),
            sha256=data["sha256"],
            size_bytes=int(data["size_bytes"]),
            source_job_id=data.get("source_job_id"),
            warnings=list(data.get("warnings") or []),
            created_at=_when(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class Dataset:
    id: str  # ds_… or builtin:<name>
    name: str
    builtin: bool
    kind: str  # builtin, npz or imagefolder
    input_shape: list[int]
    num_classes: int
    train_size: int | None
    test_size: int | None
    sha256: str | None
    size_bytes: int | None
    description: str | None
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dataset:
        return cls(
            id=data["id"],
            name=data["name"],
            builtin=bool(data.get("builtin")),
            kind=data.get("kind", ""),
            input_shape=list(data.get("input_shape") or []),
            num_classes=int(data.get("num_classes") or 0),
            train_size=data.get("train_size"),
            test_size=data.get("test_size"),
            sha256=data.get("sha256"),
            size_bytes=data.get("size_bytes"),
            description=data.get("description"),
            created_at=_when(data.get("created_at")),
            raw=data,
        )


# -- jobs -----------------------------------------------------------------------------------


Interval = tuple[float, float]  # (low, high)
Z_95 = 1.959963984540054  # two-sided 95%
ACCURACY_NAMES = (
    "clean_accuracy",
    "robust_accuracy",
    "pgd_accuracy",
    "fgsm_accuracy",
    "autoattack_accuracy",
)


def wilson_interval(accuracy: float, samples: int, *, z: float = Z_95) -> Interval:
    """The Wilson score interval of `accuracy` measured on `samples` examples (centered at
    (p + z²/2n) / (1 + z²/n), not at p): what the service stores, computed for reports that
    older servers stored without it."""
    if samples <= 0:
        return 0.0, 1.0
    n, p = float(samples), min(max(float(accuracy), 0.0), 1.0)
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def _interval(value: Any) -> Interval | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return float(value[0]), float(value[1])
    return None


@dataclass(frozen=True)
class Stage:
    """One attack of the evaluation's ensemble, run on the examples every earlier one left."""

    name: str  # PGD-20, APGD-CE, APGD-T, FAB-T, Square
    attacked: int | None  # examples it ran on
    robust_accuracy: float | None  # after it and every earlier one (cumulative)
    seconds: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Stage:
        return cls(
            name=str(data.get("name", "")),
            attacked=data.get("attacked"),
            robust_accuracy=data.get("robust_accuracy"),
            seconds=data.get("seconds"),
        )


@dataclass(frozen=True)
class Evaluation:
    """One model measured on the job's test subset (metrics.before or metrics.after).

    Reports stored by older servers lack `attack`, `pgd_accuracy`, `stages` and the intervals:
    `attack` and `pgd_accuracy` are None, `stages` empty, and the intervals are computed here
    from each accuracy and `num_samples` (the same Wilson intervals the service stores).
    """

    clean_accuracy: float
    # The headline: the per-example worst case over the preset's attacks (older servers: PGD)
    robust_accuracy: float
    attack: str | None  # the preset: fast, standard or autoattack (None: an older server's PGD)
    pgd_accuracy: float | None  # PGD-`attack_steps` alone, the ensemble's first attack
    fgsm_accuracy: float | None
    autoattack_accuracy: float | None
    accuracy_by_epsilon: dict[float, float]
    stages: list[Stage]
    confidence_level: float
    confidence_intervals: dict[str, Interval]  # accuracy name (clean_accuracy, ...) -> interval
    intervals_by_epsilon: dict[float, Interval]  # the intervals of accuracy_by_epsilon
    epsilon: float | None
    norm: str | None
    attack_steps: int | None
    restarts: int | None
    num_samples: int | None
    warnings: list[str]  # failed sanity checks: signs of gradient masking

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        threat = data.get("threat") or {}
        samples = data.get("num_samples")
        stored = data.get("confidence_intervals") or {}
        by_epsilon = {
            float(eps): float(acc) for eps, acc in (data.get("accuracy_by_epsilon") or {}).items()
        }

        def interval(stored_value: Any, accuracy: Any) -> Interval | None:
            kept = _interval(stored_value)
            if kept is not None or not isinstance(accuracy, int | float) or not samples:
                return kept
            return wilson_interval(float(accuracy), int(samples))

        intervals = {
            name: found
            for name in ACCURACY_NAMES
            if (found := interval(stored.get(name), data.get(name))) is not None
        }
        stored_by_epsilon = {
            float(eps): value for eps, value in (stored.get("accuracy_by_epsilon") or {}).items()
        }
        epsilon_intervals = {
            eps: found
            for eps, acc in by_epsilon.items()
            if (found := interval(stored_by_epsilon.get(eps), acc)) is not None
        }
        return cls(
            clean_accuracy=float(data["clean_accuracy"]),
            robust_accuracy=float(data["robust_accuracy"]),
            attack=data.get("attack"),
            pgd_accuracy=data.get("pgd_accuracy"),
            fgsm_accuracy=data.get("fgsm_accuracy"),
            autoattack_accuracy=data.get("autoattack_accuracy"),
            accuracy_by_epsilon=by_epsilon,
            stages=[Stage.from_json(stage) for stage in data.get("stages") or []],
            confidence_level=float(data.get("confidence_level") or 0.95),
            confidence_intervals=intervals,
            intervals_by_epsilon=epsilon_intervals,
            epsilon=threat.get("epsilon"),
            norm=threat.get("norm"),
            attack_steps=data.get("attack_steps"),
            restarts=data.get("restarts"),
            num_samples=samples,
            warnings=list(data.get("warnings") or []),
        )


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of fine-tuning (metrics.epochs, and the data of an `epoch` event)."""

    epoch: int
    train_loss: float
    train_robust_accuracy: float | None
    lr: float
    epsilon: float | None
    val_clean_accuracy: float | None
    val_robust_accuracy: float | None
    seconds: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpochRecord:
        return cls(
            epoch=int(data["epoch"]),
            train_loss=float(data["train_loss"]),
            train_robust_accuracy=data.get("train_robust_accuracy"),
            lr=float(data.get("lr") or 0.0),
            epsilon=data.get("epsilon"),
            val_clean_accuracy=data.get("val_clean_accuracy"),
            val_robust_accuracy=data.get("val_robust_accuracy"),
            seconds=data.get("seconds"),
        )


@dataclass(frozen=True)
class Progress:
    phase: str | None  # evaluating_before, training, evaluating_after, done
    epoch: int | None
    epochs: int | None
    step: int | None
    steps_per_epoch: int | None
    fraction: float  # of the training, 0 to 1
    loss: float | None  # the last batch's
    eta_seconds: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            phase=data.get("phase"),
            epoch=data.get("epoch"),
            epochs=data.get("epochs"),
            step=data.get("step"),
            steps_per_epoch=data.get("steps_per_epoch"),
            fraction=float(data.get("fraction") or 0.0),
            loss=data.get("loss"),
            eta_seconds=data.get("eta_seconds"),
        )


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True)
class Job:
    id: str
    kind: str  # harden or evaluate
    status: str  # queued, running, succeeded, failed, cancelled
    model_id: str | None
    dataset: str
    threat_model: dict[str, Any]
    hyperparameters: dict[str, Any]
    evaluation: dict[str, Any]
    seed: int
    progress: Progress
    before: Evaluation | None
    after: Evaluation | None
    epochs: list[EpochRecord]
    best_epoch: int | None
    # harden jobs that succeeded: "improved", "clean_dropped" or "not_improved" (else None)
    verdict: str | None
    validation: dict[str, Any] | None  # {"source": "train_holdout" | "uploaded", "size": N}
    peak_lr: float | None  # the rate trained at: the one asked for, or the probe's choice
    optimizer: str | None  # the one trained with: "sgd" or "adamw" ("auto" resolved)
    lr_probe: dict[str, Any] | None  # the probe's rates, scores, choice and cost (None: asked)
    guards: list[dict[str, Any]]  # the guards' decisions while training (a step back, a stop)
    # When no epoch kept clean accuracy: the mix of the best epoch's weights with the uploaded
    # ones handed back (its from_epoch, fraction, scores, the mixes tried); None: no search
    interpolation: dict[str, Any] | None
    result_model_id: str | None
    error: JobError | None
    manifest: dict[str, Any]
    attempts: int
    cancel_requested: bool
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        metrics = data.get("metrics") or {}
        error = data.get("error")
        return cls(
            id=data["id"],
            kind=data["kind"],
            status=data["status"],
            model_id=data.get("model_id"),
            dataset=data["dataset"],
            threat_model=dict(data.get("threat_model") or {}),
            hyperparameters=dict(data.get("hyperparameters") or {}),
            evaluation=dict(data.get("evaluation") or {}),
            seed=int(data.get("seed") or 0),
            progress=Progress.from_json(data.get("progress") or {}),
            before=Evaluation.from_json(metrics["before"]) if metrics.get("before") else None,
            after=Evaluation.from_json(metrics["after"]) if metrics.get("after") else None,
            epochs=[EpochRecord.from_json(each) for each in metrics.get("epochs") or []],
            best_epoch=metrics.get("best_epoch"),
            verdict=metrics.get("verdict"),
            validation=metrics.get("validation"),
            peak_lr=metrics.get("peak_lr"),
            optimizer=metrics.get("optimizer"),
            lr_probe=metrics.get("lr_probe"),
            guards=list(metrics.get("guards") or []),
            interpolation=metrics.get("interpolation"),
            result_model_id=data.get("result_model_id"),
            error=JobError(str(error.get("code", "")), str(error.get("message", "")))
            if error
            else None,
            manifest=dict(data.get("manifest") or {}),
            attempts=int(data.get("attempts") or 0),
            cancel_requested=bool(data.get("cancel_requested")),
            created_at=_when(data.get("created_at")),
            started_at=_when(data.get("started_at")),
            finished_at=_when(data.get("finished_at")),
            raw=data,
        )


@dataclass(frozen=True)
class Event:
    id: int
    type: str  # queued, started, evaluated, epoch, succeeded, failed, cancelled, ...
    message: str
    data: dict[str, Any]
    created_at: datetime | None

    @property
    def epoch(self) -> EpochRecord | None:
        """The epoch's metrics, for an `epoch` event."""
        return EpochRecord.from_json(self.data) if self.type == "epoch" else None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(
            id=int(data["id"]),
            type=data["type"],
            message=data.get("message", ""),
            data=dict(data.get("data") or {}),
            created_at=_when(data.get("created_at")),
        )


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    metrics: dict[str, Any]  # the epoch's validation metrics
    sha256: str
    size_bytes: int
    created_at: datetime | None
    content_url: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            epoch=int(data["epoch"]),
            metrics=dict(data.get("metrics") or {}),
            sha256=data["sha256"],
            size_bytes=int(data["size_bytes"]),
            created_at=_when(data.get("created_at")),
            content_url=data["content_url"],
        )


# -- a job's options: None leaves a knob to the server's default (the paper's) ---------------


def _set_fields(options: Any) -> dict[str, Any]:
    return {name: value for name, value in asdict(options).items() if value is not None}


@dataclass(frozen=True)
class ThreatModelOptions:
    norm: str | None = None  # linf or l2
    epsilon: float | None = None  # in [0,1] pixel space
    step_size: float | None = None  # default 2.5 * epsilon / steps
    steps: int | None = None  # PGD steps of the training attack

    def to_json(self) -> dict[str, Any]:
        return _set_fields(self)


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int | None = None
    batch_size: int | None = None
    schedule: str | None = None  # slow_start_fast_decay, constant, piecewise, cosine, one_cycle
    peak_lr: float | None = None  # None: chosen by the service's learning-rate probe
    optimizer: str | None = None  # auto (AdamW for LayerNorm networks, else SGD), sgd, adamw
    warmup_fraction: float | None = None
    decay: str | None = None
    decay_gamma: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    loss: str | None = None  # pgd or trades
    trades_beta: float | None = None
    attack: str | None = None  # pgd, or fgsm (fast mode)
    epsilon_rampup_fraction: float | None = None
    max_clean_drop: float | None = None  # the most validation/test clean accuracy may fall
    validation_fraction: float | None = None  # share of train held out to pick the best epoch
    guards: bool | None = None  # step back from a climbing loss or a collapsed clean accuracy
    # When no epoch keeps clean accuracy: hand back a mix of the best epoch's weights with the
    # uploaded ones that does
    weight_interpolation: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return _set_fields(self)


@dataclass(frozen=True)
class EvaluationOptions:
    # The headline's attacks: fast (PGD alone), standard (PGD, APGD-CE, APGD-T; the server's
    # default) or autoattack (PGD, then the full standard AutoAttack)
    attack: str | None = None
    attack_steps: int | None = None
    restarts: int | None = None
    autoattack: bool | None = None  # deprecated: True is attack="autoattack"
    epsilons: list[float] | None = None  # default: multiples of the threat's epsilon
    max_samples: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _set_fields(self)
