"""The automatic peak learning rate: which rates a probe tries, what it may spend, which wins.

A fine-tuning run whose `peak_lr` is None starts with a probe (core.robust.finetune runs it):
every candidate rate fine-tunes a copy of the starting model for the same few steps, on the
same batches and attack noise (a paired comparison), under the run's own schedule shape
compressed to those steps; each is then scored on a fixed subset of the validation split, its
BatchNorm statistics first measured again on the trial's training images (core.robust.batchnorm:
after a few steps the running averages still describe the starting weights). The
most robust candidate among those that kept validation clean accuracy within max_clean_drop of
the starting model's wins; candidates within one standard error of its robust accuracy count
as tied, and the lowest rate among them is taken. When no candidate kept the clean accuracy,
the cleanest one wins.

The choice is cautious, and benchmarks/zoo.py shows how much: a trial of a few steps sees the
dip in clean accuracy that a high rate causes at its peak, not the recovery that the full
run's decay brings, so where the full run is best at a high rate (RegNetX on digits32: 0.2)
the probe picks a lower one and leaves robust accuracy on the table. A trial cannot tell that
rate from one that collapses a model later in the run (MobileNetV3 at 0.06-0.2 looks like
RegNetX at 0.2 after 4 steps): the guards and, when clean accuracy is lost, the interpolation
back toward the starting weights (core.robust.interpolation) are the run's own defences.

The grid is scaled to the batch size by the linear scaling rule (Goyal et al.): a batch of 256
tries twice the rates of a batch of 128. It spans 100x because the best rate differs that much
between families (benchmarks/zoo.py: 0.002 for MobileNetV3, 0.2 for ResNet-18 and RegNetX;
the 8x8 digits CNN's 0.2, benchmarks/schedules.py). Each optimizer has its own grid
(core.robust.optimizers: SGD's, and AdamW's about 100x lower).

What the probe spends is counted in the engine's unit, forward+backward passes over a batch,
and bounded by PROBE_BUDGET_FRACTION of the run's training; a run too short to give each
candidate MIN_STEPS steps within it spends MIN_STEPS anyway, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.robust.optimizer_rates import candidate_rates

PROBE_BUDGET_FRACTION = 0.1
MIN_STEPS = 4
MAX_STEPS = 200  # a cap: on a very long run the probe stays short (it then spends less)
EVAL_SAMPLES = 256  # validation images each candidate is scored on
EVAL_ATTACK_STEPS = 5


@dataclass(frozen=True)
class ProbePlan:
    """How long each candidate trains, and what that costs against the training budget."""

    rates: list[float]
    steps: int  # training steps per candidate
    eval_samples: int
    eval_attack_steps: int
    eval_passes: int  # batch passes of scoring one candidate (BatchNorm recalibration, a clean
    # pass and the attack)
    passes_per_step: int  # forward+backward batch passes of one training step
    training_passes: int  # of the run the probe serves
    probe_passes: int  # of the whole probe, scoring included

    @property
    def budget_fraction(self) -> float:
        return self.probe_passes / self.training_passes if self.training_passes else math.inf

    @property
    def over_budget(self) -> bool:
        return self.budget_fraction > PROBE_BUDGET_FRACTION + 1e-9


def plan_probe(
    *,
    batch_size: int,
    optimizer: str = "sgd",
    training_steps: int,
    passes_per_step: int,
    val_size: int,
    val_attack_steps: int,
    batchnorm: bool = False,
) -> ProbePlan:
    """The probe that fits in PROBE_BUDGET_FRACTION of a run of `training_steps` steps (with
    `batchnorm`, each candidate's statistics are measured again: a forward pass per step)."""
    rates = candidate_rates(batch_size, optimizer)
    eval_samples = min(val_size, EVAL_SAMPLES)
    eval_steps = min(val_attack_steps, EVAL_ATTACK_STEPS)
    # Scoring one candidate: a clean pass and the attack's steps, over eval_samples images.
    scoring_passes = math.ceil(eval_samples * (eval_steps + 1) / batch_size)
    training_passes = training_steps * passes_per_step
    per_candidate = PROBE_BUDGET_FRACTION * training_passes / len(rates) - scoring_passes
    per_step = passes_per_step + (1 if batchnorm else 0)  # counted as a full pass: bounded
    steps = min(MAX_STEPS, max(MIN_STEPS, math.floor(per_candidate / per_step)))
    eval_passes = scoring_passes + (steps if batchnorm else 0)
    probe_passes = len(rates) * (steps * passes_per_step + eval_passes)
    return ProbePlan(
        rates=rates,
        steps=steps,
        eval_samples=eval_samples,
        eval_attack_steps=eval_steps,
        eval_passes=eval_passes,
        passes_per_step=passes_per_step,
        training_passes=training_passes,
        probe_passes=probe_passes,
    )


@dataclass(frozen=True)
class ProbeTrial:
    lr: float
    val_clean_accuracy: float
    val_robust_accuracy: float
    kept_clean: bool  # within max_clean_drop of the starting model's clean accuracy
    diverged: bool = False  # the loss became NaN or infinite: scored as zero


@dataclass(frozen=True)
class LrProbe:
    """What the probe tried, what it chose and why, and what it cost."""

    chosen_lr: float
    reason: str
    trials: list[ProbeTrial] = field(default_factory=list)
    steps_per_trial: int = 0
    eval_samples: int = 0
    gradient_passes: int = 0
    budget_fraction: float = 0.0  # of the run's training passes
    seconds: float = 0.0
    reference_clean_accuracy: float | None = None


def choose_rate(trials: Sequence[ProbeTrial], *, eval_samples: int) -> tuple[float, str]:
    """The winning rate among scored trials, and a sentence saying why it won."""
    kept = [trial for trial in trials if trial.kept_clean and not trial.diverged]
    if not kept:
        alive = [trial for trial in trials if not trial.diverged] or list(trials)
        cleanest = max(alive, key=lambda trial: (trial.val_clean_accuracy, -trial.lr))
        return cleanest.lr, (
            "no rate kept validation clean accuracy within max_clean_drop in the probe; "
            f"{cleanest.lr:.3g} lost the least"
        )
    best = max(trial.val_robust_accuracy for trial in kept)
    # One standard error of a proportion measured on eval_samples images.
    noise = math.sqrt(max(best * (1 - best), 0.01) / max(eval_samples, 1))
    tied = [trial for trial in kept if trial.val_robust_accuracy >= best - noise]
    chosen = min(tied, key=lambda trial: trial.lr)
    return chosen.lr, (
        f"the lowest rate within one standard error ({noise:.3f}) of the most robust "
        f"({best:.3f}) among {len(kept)} of {len(trials)} rates that kept clean accuracy"
    )
