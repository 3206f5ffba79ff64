"""The knobs of an adversarial fine-tuning run (FinetuneConfig) and the names they take.

Torch-free, so the API can validate and document a job without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from core.robust.augmentation_choice import AUGMENTATIONS, Augmentation
from core.robust.errors import InvalidConfig
from core.robust.optimizer_rates import OPTIMIZERS
from core.robust.schedules import ScheduleConfig

LOSSES = ("pgd", "trades")
ATTACKS = ("pgd", "fgsm")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class FinetuneConfig:
    """Every knob of a fine-tuning run.

    warmup_fraction, decay and the epsilon ramp-up are what benchmarks/schedules.py chose on
    digits (README): the peak rate mattered most, the schedule's shape little. The peak rate
    differs by 10x between model families (benchmarks/zoo.py), so by default (None) a short
    probe chooses it for each run.
    """

    epochs: int = 10
    batch_size: int = 128
    schedule: str = "slow_start_fast_decay"
    peak_lr: float | None = None  # None: chosen by core.robust.lr_probe's probe
    # "auto": AdamW for a LayerNorm network without BatchNorm, else SGD (core.robust.optimizers)
    optimizer: str = "auto"
    warmup_fraction: float = 0.5
    decay: str = "linear"
    decay_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: str = "pgd"  # "pgd": Madry's PGD-AT; "trades": Zhang et al.'s TRADES
    trades_beta: float = 6.0
    attack: str = "pgd"  # "fgsm": one step from a random start (fast mode)
    # epsilon grows linearly from 0 over this fraction of the run: a non-robust model asked to
    # resist the full radius at once can collapse to a constant prediction.
    epsilon_rampup_fraction: float = 0.3
    val_attack_steps: int = 10
    val_max_samples: int = 500
    # The best epoch must keep validation clean accuracy >= the starting model's - this; when no
    # epoch does, the most robust one is the end of the line searched by weight_interpolation.
    max_clean_drop: float = 0.03
    # Step back from (and at last stop on) a climbing loss or a collapsed clean accuracy.
    guards: bool = True
    # When no epoch kept clean accuracy: hand back a mix of the best epoch's weights with the
    # starting ones that does, the most robust one a search found (core.robust.interpolation).
    weight_interpolation: bool = True
    # Applied to each training batch on the run's device (core.robust.datasets.augment). The
    # engine's default is none, so a config without it trains as before; the service resolves
    # a job's "auto" by its data (core.robust.augmentation_choice.default_augmentation).
    augmentation: Augmentation = "none"
    # The training step's speed (core.robust.precision): "auto" precision is, on CUDA, fp32
    # for images of at most precision.AUTO_FP32_MAX_SIDE pixels a side and above that bf16
    # where the device has it, else fp16 with a GradScaler; fp32 on the CPU. channels_last
    # (None: with CUDA) and cudnn_benchmark (None: with CUDA); compile: torch.compile for training.
    # Validation and evaluation stay fp32 whatever these say.
    precision: Precision = "auto"
    channels_last: bool | None = None
    cudnn_benchmark: bool | None = None
    compile: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.epochs <= 1000:
            raise InvalidConfig(f"epochs must be between 1 and 1000, got {self.epochs}")
        if not 1 <= self.batch_size <= 65536:
            raise InvalidConfig(f"batch_size must be between 1 and 65536, got {self.batch_size}")
        if self.loss not in LOSSES:
            raise InvalidConfig(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.attack not in ATTACKS:
            raise InvalidConfig(f"attack must be one of {', '.join(ATTACKS)}, got {self.attack!r}")
        if self.augmentation not in AUGMENTATIONS:
            raise InvalidConfig(
                f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {self.augmentation!r}"
            )
        if self.precision not in PRECISIONS:
            raise InvalidConfig(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise InvalidConfig(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not 0 <= self.momentum < 1:
            raise InvalidConfig(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.weight_decay < 1:
            raise InvalidConfig(f"weight_decay must be in [0, 1), got {self.weight_decay}")
        if not 0 <= self.trades_beta <= 100:
            raise InvalidConfig(f"trades_beta must be in [0, 100], got {self.trades_beta}")
        if not 0 <= self.epsilon_rampup_fraction <= 1:
            raise InvalidConfig(
                f"epsilon_rampup_fraction must be in [0, 1], got {self.epsilon_rampup_fraction}"
            )
        if not 0 <= self.max_clean_drop <= 1:
            raise InvalidConfig(f"max_clean_drop must be in [0, 1], got {self.max_clean_drop}")
        if self.val_attack_steps < 1 or self.val_max_samples < 1:
            raise InvalidConfig("val_attack_steps and val_max_samples must be at least 1")
        self.schedule_config()  # validates the schedule's own knobs

    def schedule_config(self, peak_lr: float | None = None) -> ScheduleConfig:
        """The schedule at `peak_lr` (the config's own, else the probe's; checked at 1.0)."""
        return ScheduleConfig(
            name=self.schedule,
            peak_lr=peak_lr or self.peak_lr or 1.0,
            warmup_fraction=self.warmup_fraction,
            decay=self.decay,
            decay_gamma=self.decay_gamma,
        )
