"""The learning-rate probe as a fine-tuning run takes it: a few steps of training at each rate of
core.robust.lr_probe's grid, each scored on the validation split, and the winner chosen there.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Protocol

import torch
from torch import nn

from core.robust.adversarial_loss import passes_per_step, training_threat
from core.robust.batchnorm import has_batchnorm, recalibrate_batchnorm
from core.robust.best_epoch import kept_clean
from core.robust.datasets.splits import TrainingImages
from core.robust.errors import TrainingDiverged
from core.robust.finetune_config import FinetuneConfig
from core.robust.finetune_results import FinetuneResult, OnBatch, OnProbeBatch
from core.robust.lr_probe import LrProbe, ProbePlan, ProbeTrial, choose_rate, plan_probe
from core.robust.measure import accuracy, clean_and_robust, evaluation_subset
from core.robust.optimizer_rates import fallback_rate
from core.robust.threat import ThreatModel


class TrialFinetune(Protocol):
    """How a trial trains: adversarial_finetune at the trial's rate (passed in, since the
    fine-tuning run is what calls the probe)."""

    def __call__(
        self,
        model: nn.Module,
        train: TrainingImages,
        threat: ThreatModel,
        config: FinetuneConfig,
        *,
        device: torch.device,
        on_batch: OnBatch | None,
    ) -> FinetuneResult: ...


def probe_peak_lr(
    model: nn.Module,
    train: TrainingImages,
    val_subset: TrainingImages | None,
    threat: ThreatModel,
    config: FinetuneConfig,
    *,
    device: torch.device,
    on_batch: OnProbeBatch | None,
    finetune: TrialFinetune,
) -> LrProbe:
    """Try each rate of the grid for a few paired steps and keep the winner (lr_probe); each
    trial is a short `finetune` at that rate."""
    if val_subset is None or len(val_subset) == 0:
        rate = fallback_rate(config.batch_size, config.optimizer)
        return LrProbe(
            chosen_lr=rate,
            reason=f"no validation split to probe on: the fallback rate {rate:.3g}",
        )
    started = time.perf_counter()
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    step_threat = training_threat(threat, config, threat.epsilon)
    plan = plan_probe(
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        training_steps=steps_per_epoch * config.epochs,
        passes_per_step=passes_per_step(config, step_threat),
        val_size=len(val_subset),
        val_attack_steps=config.val_attack_steps,
        batchnorm=has_batchnorm(model),
    )
    images = plan.steps * config.batch_size
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed + 3))
    batches = train.subset(order[:images].sort().values)
    scored = val_subset.subset(
        evaluation_subset(val_subset, max_samples=plan.eval_samples, seed=config.seed + 3)
    )
    reference = accuracy(model, scored, batch_size=256, device=device)
    trials, passes = [], 0
    for index, rate in enumerate(plan.rates):
        trial, trial_passes = _probe_trial(
            model, batches, scored, threat, config, plan, rate, reference, device=device,
            on_batch=None if on_batch is None else _numbered(on_batch, index + 1, plan),
            finetune=finetune,
        )  # fmt: skip
        trials.append(trial)
        passes += trial_passes
    chosen, reason = choose_rate(trials, eval_samples=len(scored))
    return LrProbe(
        chosen_lr=chosen,
        reason=reason,
        trials=trials,
        steps_per_trial=plan.steps,
        eval_samples=len(scored),
        gradient_passes=passes,
        budget_fraction=passes / max(plan.training_passes, 1),
        seconds=time.perf_counter() - started,
        reference_clean_accuracy=reference,
    )


def _numbered(on_batch: OnProbeBatch, candidate: int, plan: ProbePlan) -> OnBatch:
    """A trial's batches as the probe's progress: (candidate, candidates, step, steps, and the
    probe's planned share of the job's training work, so that a job's progress can count the
    probe and the training as one)."""
    share = plan.probe_passes / max(plan.probe_passes + plan.training_passes, 1)

    def report(epoch: int, step: int, steps: int, _loss: float) -> None:
        done = min((epoch - 1) * steps + step, plan.steps)
        on_batch(candidate, len(plan.rates), done, plan.steps, share)

    return report


def _probe_trial(
    model: nn.Module,
    batches: TrainingImages,
    scored: TrainingImages,
    threat: ThreatModel,
    config: FinetuneConfig,
    plan: ProbePlan,
    rate: float,
    reference: float,
    *,
    device: torch.device,
    on_batch: OnBatch | None,
    finetune: TrialFinetune,
) -> tuple[ProbeTrial, int]:
    """One candidate: the run's schedule shape over the probe's steps, then scored."""
    epochs = max(1, math.ceil(plan.steps * config.batch_size / max(len(batches), 1)))
    # The trial keeps the run's augmentation: a rate is scored on the training the run will do.
    trial_config = replace(config, epochs=epochs, peak_lr=rate, guards=False, seed=config.seed + 3)
    try:
        result = finetune(model, batches, threat, trial_config, device=device, on_batch=on_batch)
    except TrainingDiverged:
        trial = ProbeTrial(
            lr=rate, val_clean_accuracy=0.0, val_robust_accuracy=0.0, kept_clean=False,
            diverged=True,
        )  # fmt: skip
        return trial, plan.steps * plan.passes_per_step
    recalibrate_batchnorm(result.model, batches, batch_size=config.batch_size, device=device)
    clean, robust = clean_and_robust(
        result.model,
        scored,
        threat.with_steps(plan.eval_attack_steps),
        seed=config.seed + 2,
        batch_size=max(config.batch_size, 256),
        device=device,
    )
    trial = ProbeTrial(
        lr=rate,
        val_clean_accuracy=clean,
        val_robust_accuracy=robust,
        kept_clean=kept_clean(clean, reference, config.max_clean_drop),
    )
    return trial, result.history[-1].gradient_passes + plan.eval_passes
