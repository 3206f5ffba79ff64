"""Learning-rate schedules, stepped per iteration: lr = schedule(t) for t in [0, total_steps).

`slow_start_fast_decay` is the fine-tuning schedule after Jeddi et al. (arXiv 2012.13628):
a linear warm-up from 0 to the peak over the first `warmup_fraction` of the run, then a fast
decay (linear to 0, or exponential per epoch). The others are the usual comparisons.
Every schedule is a pure function of the step, so resuming needs only the step counter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from core.robust.errors import InvalidConfig

Schedule = Callable[[int], float]

SCHEDULES = ("slow_start_fast_decay", "constant", "piecewise", "cosine", "one_cycle")
DECAYS = ("linear", "exponential")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "slow_start_fast_decay"
    peak_lr: float = 0.2
    warmup_fraction: float = 0.5
    decay: str = "linear"
    decay_gamma: float = 0.1
    # piecewise: the rate is multiplied by `piecewise_factor` at each of these fractions of the run.
    milestones: tuple[float, ...] = (0.5, 0.75)
    piecewise_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise InvalidConfig(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.name!r}"
            )
        if not (self.peak_lr > 0 and math.isfinite(self.peak_lr)):
            raise InvalidConfig(f"peak_lr must be a positive number, got {self.peak_lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise InvalidConfig(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.decay not in DECAYS:
            raise InvalidConfig(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if not 0 < self.decay_gamma < 1:
            raise InvalidConfig(f"decay_gamma must be in (0, 1), got {self.decay_gamma}")


def slow_start_fast_decay(
    *,
    peak_lr: float,
    total_steps: int,
    steps_per_epoch: int,
    warmup_fraction: float = 0.5,
    decay: str = "linear",
    decay_gamma: float = 0.1,
) -> Schedule:
    """lr(t) = η·t/(p·T) for t < p·T; then η·(T-t)/((1-p)·T) or η·γ^((t-p·T)/steps_per_epoch)."""
    warmup_steps = warmup_fraction * total_steps
    decay_steps = total_steps - warmup_steps

    def lr(step: int) -> float:
        if step < warmup_steps:
            return peak_lr * step / warmup_steps
        if decay == "linear":
            return peak_lr * (total_steps - step) / decay_steps
        return peak_lr * decay_gamma ** ((step - warmup_steps) / steps_per_epoch)

    return lr


def constant(*, peak_lr: float) -> Schedule:
    return lambda _step: peak_lr


def piecewise(
    *, peak_lr: float, total_steps: int, milestones: tuple[float, ...], factor: float
) -> Schedule:
    """The classic step schedule: peak_lr, times `factor` at each milestone (a fraction of T)."""
    boundaries = sorted(m * total_steps for m in milestones)

    def lr(step: int) -> float:
        return peak_lr * factor ** sum(step >= boundary for boundary in boundaries)

    return lr


def cosine(*, peak_lr: float, total_steps: int) -> Schedule:
    return lambda step: peak_lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))


def one_cycle(
    *,
    peak_lr: float,
    total_steps: int,
    warmup_fraction: float = 0.3,
    start_div: float = 25.0,
    end_div: float = 1e4,
) -> Schedule:
    """Smith's one-cycle as torch's OneCycleLR draws it (cosine up, cosine down)."""
    warmup_steps = max(warmup_fraction * total_steps, 1.0)
    start, end = peak_lr / start_div, peak_lr / end_div

    def anneal(begin: float, finish: float, fraction: float) -> float:
        return finish + (begin - finish) * 0.5 * (1 + math.cos(math.pi * fraction))

    def lr(step: int) -> float:
        if step < warmup_steps:
            return anneal(start, peak_lr, step / warmup_steps)
        return anneal(peak_lr, end, (step - warmup_steps) / max(total_steps - warmup_steps, 1.0))

    return lr


def make_schedule(config: ScheduleConfig, *, total_steps: int, steps_per_epoch: int) -> Schedule:
    """The schedule `config` names, for a run of `total_steps` iterations."""
    if config.name == "slow_start_fast_decay":
        return slow_start_fast_decay(
            peak_lr=config.peak_lr,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            warmup_fraction=config.warmup_fraction,
            decay=config.decay,
            decay_gamma=config.decay_gamma,
        )
    if config.name == "constant":
        return constant(peak_lr=config.peak_lr)
    if config.name == "piecewise":
        return piecewise(
            peak_lr=config.peak_lr,
            total_steps=total_steps,
            milestones=config.milestones,
            factor=config.piecewise_factor,
        )
    if config.name == "cosine":
        return cosine(peak_lr=config.peak_lr, total_steps=total_steps)
    # one_cycle keeps its conventional 30% warm-up: warmup_fraction belongs to the
    # slow-start schedule, whose default (0.5) would make a different curve here.
    return one_cycle(peak_lr=config.peak_lr, total_steps=total_steps)
