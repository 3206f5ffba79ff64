"""One epoch of a fine-tuning run: the pass over the training data (with the guards watching its
loss), then the validation that records it and keeps the best weights."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.robust.adversarial_loss import passes_per_step, step_loss, training_threat
from core.robust.best_epoch import COLLAPSED
from core.robust.datasets.augment import augmentation_for
from core.robust.datasets.splits import TrainingImages
from core.robust.errors import TrainingDiverged
from core.robust.finetune_results import EpochMetrics, OnBatch, OnDecision
from core.robust.finetune_run import FinetuneRun, cpu_copy
from core.robust.precision import autocast, backward_and_step, prepare_inputs


@dataclass(frozen=True)
class EpochTraining:
    """What one pass over the training data measured."""

    loss: float
    robust_accuracy: float
    seconds: float


def train_one_epoch(
    run: FinetuneRun,
    *,
    on_batch: OnBatch | None,
    should_stop: Callable[[], bool] | None,
    on_decision: OnDecision | None,
) -> EpochTraining | None:
    """One pass over the training data; None when should_stop() ended it early. The guards may
    step back within it, or end it (and the run) early."""
    config, model = run.config, run.model
    augment = augmentation_for(config.augmentation)
    model.train()
    started = time.perf_counter()
    loss_sum, robust_correct, seen = 0.0, 0, 0
    for index, (x, labels) in enumerate(
        run.train.batches(config.batch_size, generator=run.order_generator)
    ):
        if should_stop is not None and should_stop():
            return None
        x, labels = x.to(run.device), labels.to(run.device)
        if augment is not None:  # on the device: on a GPU the crops cost next to nothing
            x = augment(x, run.augment_generator)
        # After the crops: every rank draws the whole batch's, the 1-process run's, in step.
        shard = run.ranks.shard(x, labels)  # the whole batch in one process
        x, labels = shard.images, shard.labels
        x = prepare_inputs(x, run.speed)
        lr = run.lr_at(run.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        step_threat = training_threat(run.threat, config, run.epsilon_at(run.step))
        with autocast(run.speed):  # the attack and the loss; the backward runs outside
            loss, adv_logits = step_loss(
                run.training_model, x, labels, step_threat, config, generator=run.noise_generator
            )
        run.gradient_passes += passes_per_step(config, step_threat)
        value = run.ranks.mean(loss.item(), shard.count)  # the global batch's: guards agree
        if _guarded(run, value, lr=lr, on_decision=on_decision):
            if run.stopped_early:
                break
            continue  # this batch's update would come from weights that are gone
        run.optimizer.zero_grad(set_to_none=True)
        # False: fp16's GradScaler skipped the step (inf in the scaled gradients). The loss the
        # guards saw was finite: the weights did not move, and they are still those restored.
        if backward_and_step(loss * shard.weight, run.optimizer, run.grad_scaler):
            run.steps_since_restore += 1
        run.step += 1
        loss_sum += value * shard.count
        robust_correct += int((adv_logits.argmax(1) == labels)[: shard.count].sum())
        seen += shard.count
        if on_batch is not None:
            on_batch(run.epoch + 1, index + 1, run.steps_per_epoch, value)
    loss_sum, robust_sum, seen_sum = run.ranks.sums([loss_sum, robust_correct, seen])
    seconds = time.perf_counter() - started
    run.train_seconds += seconds
    return EpochTraining(
        loss=loss_sum / max(seen_sum, 1),
        robust_accuracy=robust_sum / max(seen_sum, 1),
        seconds=seconds,
    )


def _guarded(run: FinetuneRun, loss: float, *, lr: float, on_decision: OnDecision | None) -> bool:
    """Whether the guards acted on this batch's loss (stepped back, or stopped the run)."""
    finite = math.isfinite(loss)
    if not run.config.guards or (not finite and run.steps_since_restore == 0):
        if finite:
            return False
        # Unguarded, or the loss is not finite on weights just restored: nothing to go back to.
        raise TrainingDiverged(
            f"the training loss became {loss} at epoch {run.epoch + 1}, step {run.step + 1} "
            f"(learning rate {lr:.4g}); lower peak_lr or check the model"
        )
    sign = run.guard.observe_loss(loss)
    if sign is None:
        return False
    decision = run.step_back(*sign)
    if on_decision is not None:
        on_decision(decision)
    return True


def end_epoch(
    run: FinetuneRun, training: EpochTraining, val_subset: TrainingImages | None
) -> EpochMetrics:
    """Validate, keep the best weights, and record the epoch."""
    started = time.perf_counter()
    run.ranks.sync_buffers(run.model)
    run.noise_states = run.ranks.gather_states(run.noise_generator.get_state())
    val_clean = val_robust = None
    if val_subset is not None:
        val_clean, val_robust = run.validate(val_subset)
    tier, score = run.rank(val_clean, val_robust)
    if (tier, score) > (run.best_tier, run.best_robust_accuracy):
        run.best_tier, run.best_robust_accuracy = tier, score
        run.best_epoch = run.epoch
        run.best_state = cpu_copy(run.model)
    metrics = EpochMetrics(
        epoch=run.epoch,
        train_loss=training.loss,
        train_robust_accuracy=training.robust_accuracy,
        lr=run.lr_at(max(run.step - 1, 0)),
        epsilon=run.epsilon_at(max(run.step - 1, 0)),
        val_clean_accuracy=val_clean,
        val_robust_accuracy=val_robust,
        seconds=training.seconds + time.perf_counter() - started,
        gradient_passes=run.gradient_passes,
        train_seconds=run.train_seconds,
    )
    run.history.append(metrics)
    return metrics


def step_back_from_collapse(run: FinetuneRun, *, on_decision: OnDecision | None) -> None:
    """Before the next epoch: step back when the last one's clean accuracy collapsed."""
    if not run.history or run.collapse_handled_epoch == run.epoch:
        return
    last = run.history[-1]
    run.collapse_handled_epoch = run.epoch
    reference = run.reference_clean_accuracy
    if last.val_clean_accuracy is None or reference is None:
        return
    if run.rank(last.val_clean_accuracy, last.val_robust_accuracy)[0] != COLLAPSED:
        return
    threshold = run.guard.collapse_threshold(reference)
    decision = run.step_back("clean_collapse", last.val_clean_accuracy, threshold)
    if on_decision is not None:
        on_decision(decision)
