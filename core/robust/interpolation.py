"""Buying clean accuracy back: the fine-tuned weights mixed with the starting ones.

Between a starting model and its fine-tuned weights lies a line of models, `fraction` of the
way from the start: fraction * tuned + (1 - fraction) * start, every floating-point tensor of
the state (BatchNorm's running statistics too). Along it clean accuracy climbs back toward the
start's while robust accuracy falls, and gently at first: WiSE-FT (Wortsman et al., 2022)
found this for fine-tuning in general, and it holds for adversarial fine-tuning here (digits32,
test split, clean / PGD-20 %):

| run | fine-tuned | fraction 0.8 | 0.6 | start |
|---|---|---|---|---|
| ConvNeXt-atto, AdamW 6e-4 | 92.2 / 56.4 | 94.2 / 47.5 | 94.7 / 32.2 | 97.2 / 0.0 |
| small BatchNorm CNN, SGD 0.06 | 94.2 / 52.5 | 96.1 / 51.4 | 96.1 / 48.1 | 97.8 / 0.0 |
| small BatchNorm CNN, SGD 0.02 | 93.6 / 39.7 | 95.6 / 41.4 | 96.1 / 36.4 | 97.8 / 0.0 |

So when no epoch of a run kept validation clean accuracy within max_clean_drop of the start's,
the run searches the line: a bisection of SEARCH_STEPS validations toward the most fine-tuned
mix that keeps it (the fraction to 1 / 2**SEARCH_STEPS; clean accuracy is close to monotone
along the line). Robust accuracy is not always monotone along it (MobileNetV3: 45.8% at 0.75,
41.7% at 0.875), so the mix handed back is, as for the best epoch, the most robust of the
mixes tried that kept clean accuracy (the more fine-tuned on a tie); when none kept it, the
fine-tuned weights stay (the job's verdict then says the clean accuracy dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

SEARCH_STEPS = 4

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MixTrial:
    fraction: float  # of the way from the starting weights to the fine-tuned ones
    val_clean_accuracy: float
    val_robust_accuracy: float
    kept_clean: bool


@dataclass(frozen=True)
class Interpolation:
    """What the search along the line tried and what it handed back."""

    from_epoch: int  # the fine-tuned end of the line: the run's best epoch
    fraction: float | None  # the mix handed back; None: none kept clean accuracy
    val_clean_accuracy: float  # of the model handed back
    val_robust_accuracy: float
    trials: list[MixTrial] = field(default_factory=list)
    message: str = ""


def mixed_state(start: State, tuned: State, fraction: float) -> State:
    """`fraction` of the way from `start` to `tuned`; integer tensors (BatchNorm's batch
    counters) are the tuned ones."""
    return {
        name: torch.lerp(start[name].to(value.dtype), value, fraction)
        if value.is_floating_point()
        else value
        for name, value in tuned.items()
    }


def search_line(
    start: State,
    tuned: State,
    *,
    from_epoch: int,
    tuned_scores: tuple[float, float],
    score: Callable[[State], tuple[float, float]],
    kept: Callable[[float], bool],
) -> tuple[Interpolation, State]:
    """The most robust of the mixes a bisection toward the most fine-tuned one that keeps its
    validation clean accuracy (`kept(clean)`) tried and found kept; `score(state)` loads a
    state and answers its validation (clean, robust). The answer: the search's record and the
    state to hand back (`tuned` when no mix kept)."""
    low, high = 0.0, 1.0  # the start keeps its own clean accuracy; the tuned end did not
    trials: list[MixTrial] = []
    best: tuple[MixTrial, State] | None = None
    for _ in range(SEARCH_STEPS):
        fraction = (low + high) / 2
        state = mixed_state(start, tuned, fraction)
        clean, robust = score(state)
        trial = MixTrial(fraction, clean, robust, kept(clean))
        trials.append(trial)
        if not trial.kept_clean:
            high = fraction
            continue
        low = fraction
        if best is None or (robust, fraction) > (best[0].val_robust_accuracy, best[0].fraction):
            best = trial, state
    if best is None:
        clean, robust = tuned_scores
        message = (
            f"no mix of epoch {from_epoch}'s weights with the starting ones down to "
            f"{trials[-1].fraction:.3g} kept validation clean accuracy within max_clean_drop: "
            f"epoch {from_epoch}'s weights stay"
        )
        return Interpolation(from_epoch, None, clean, robust, trials, message), tuned
    trial, state = best
    message = (
        f"no epoch kept validation clean accuracy within max_clean_drop: handed back "
        f"{trial.fraction:.3g} of the way from the starting weights to epoch {from_epoch}'s "
        f"(validation clean {trial.val_clean_accuracy:.3f}, robust "
        f"{trial.val_robust_accuracy:.3f}; epoch {from_epoch}: {tuned_scores[0]:.3f}, "
        f"{tuned_scores[1]:.3f})"
    )
    interpolation = Interpolation(
        from_epoch, trial.fraction, trial.val_clean_accuracy, trial.val_robust_accuracy, trials,
        message,
    )  # fmt: skip
    return interpolation, state
