"""A job's options as the SDK takes them (`ThreatModelIn`, `HyperparametersIn`, `EvaluationIn`,
`ResourcesIn`):
None leaves a knob to the server's default (the paper's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


class JobOptions:
    def to_json(self) -> dict[str, Any]:
        """The options set, as the request's JSON object."""
        values = asdict(self)  # type: ignore[call-overload]
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True, kw_only=True)
class ThreatModelOptions(JobOptions):
    norm: str | None = None  # linf or l2
    epsilon: float | None = None  # in [0,1] pixel space
    step_size: float | None = None  # default 2.5 * epsilon / steps
    steps: int | None = None  # PGD steps of the training attack


@dataclass(frozen=True, kw_only=True)
class Hyperparameters(JobOptions):
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
    # none, standard (4-pixel padded crop and flip) or imagenet (resized crop and flip); None:
    # the server's choice by the data (never flipping digits)
    augmentation: str | None = None
    # The training step's: auto (bf16 or fp16 on a GPU, fp32 on a CPU), fp32, bf16 or fp16;
    # evaluation stays fp32
    precision: str | None = None
    compile: bool | None = None  # torch.compile the model for training (the GPU's gain)


@dataclass(frozen=True, kw_only=True)
class EvaluationOptions(JobOptions):
    # The headline's attacks: fast (PGD alone), standard (PGD, APGD-CE, APGD-T; the server's
    # default) or autoattack (PGD, then the full standard AutoAttack)
    attack: str | None = None
    attack_steps: int | None = None
    restarts: int | None = None
    autoattack: bool | None = None  # deprecated: True is attack="autoattack"
    epsilons: list[float] | None = None  # default: multiples of the threat's epsilon
    max_samples: int | None = None


@dataclass(frozen=True, kw_only=True)
class Resources(JobOptions):
    # Processes (one device each) the fine-tuning runs across; the job waits for a worker that
    # has as many. Hyperparameters.batch_size is the global batch: divisible by it.
    world_size: int | None = None
