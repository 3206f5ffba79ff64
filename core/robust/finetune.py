"""Adversarial fine-tuning (AFT): PGD adversarial training that starts from pretrained weights.

After Jeddi et al. (arXiv 2012.13628): a few epochs of adversarial training under a
*slow start, fast decay* learning rate. Each epoch ends with a validation (clean and PGD
accuracy), a resumable checkpoint, and the `on_epoch` callback; the best epoch by validation
robust accuracy, among those that kept validation clean accuracy within `max_clean_drop` of the
starting model's, is what the run returns (robust overfitting is real, and a robust model that
lost its clean accuracy is no improvement).

Without a `peak_lr` the run first probes for one (core.robust.lr_probe); while it trains, the
guards (core.robust.guards) step back from a climbing loss or a collapsed clean accuracy.

The parts, each in its module: the config (finetune_config), the run's state and checkpoint
(finetune_run), one epoch (finetune_epoch), the step's loss (adversarial_loss), the choice of
the best epoch (best_epoch), the probe (finetune_probe) and the result (finetune_results).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from core.robust.adversarial_loss import start_loss
from core.robust.best_epoch import COLLAPSED, KEPT, LOST, kept_clean
from core.robust.checkpoint import Checkpoint
from core.robust.datasets.splits import TrainingImages
from core.robust.distributed import Ranks
from core.robust.finetune_config import ATTACKS, LOSSES, FinetuneConfig
from core.robust.finetune_epoch import end_epoch, step_back_from_collapse, train_one_epoch
from core.robust.finetune_probe import probe_peak_lr
from core.robust.finetune_results import (
    EpochMetrics,
    FinetuneResult,
    OnBatch,
    OnDecision,
    OnEpoch,
    OnProbeBatch,
)
from core.robust.finetune_run import FinetuneRun, check_resumable, cpu_copy
from core.robust.interpolation import Interpolation, search_line
from core.robust.lr_probe import LrProbe
from core.robust.measure import accuracy, default_device, evaluation_subset
from core.robust.models.robust_model import copy_model
from core.robust.optimizers import resolve_optimizer
from core.robust.precision import cudnn_benchmark, release_model
from core.robust.threat import ThreatModel

__all__ = [
    "ATTACKS",
    "LOSSES",
    "EpochMetrics",
    "FinetuneConfig",
    "FinetuneResult",
    "OnBatch",
    "OnDecision",
    "OnEpoch",
    "OnProbeBatch",
    "adversarial_finetune",
]


def adversarial_finetune(
    model: nn.Module,
    train: TrainingImages,
    threat: ThreatModel,
    config: FinetuneConfig | None = None,
    *,
    val: TrainingImages | None = None,
    on_epoch: OnEpoch | None = None,
    on_batch: OnBatch | None = None,
    on_probe_batch: OnProbeBatch | None = None,
    on_decision: OnDecision | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: Checkpoint | None = None,
    device: str | torch.device | None = None,
    reference_clean_accuracy: float | None = None,
) -> FinetuneResult:
    """Adversarially fine-tune a copy of `model` on `train` against `threat`.

    `on_epoch(metrics, checkpoint)` runs after every epoch; save the checkpoint there to be
    able to `resume` from it. `should_stop()` is asked before every batch; when it answers
    True the run ends early (result.stopped) with the best epoch so far.
    With `val`, the best epoch is the highest validation robust accuracy among the epochs whose
    validation clean accuracy is at least `reference_clean_accuracy` (default: the starting
    model's, measured on the same validation subset) minus config.max_clean_drop.
    Without config.peak_lr the run probes for it first (`on_decision` gets the LrProbe); the
    guards' decisions go to `on_decision` as they are taken.
    Raises TrainingDiverged when the loss becomes NaN or infinite (with the guards: when it
    does so from the restored weights too).
    """
    config = config or FinetuneConfig()
    target = torch.device(device) if device is not None else default_device()
    if resume is not None:
        check_resumable(resume, config, threat)
    # Under torchrun every rank runs this function; only rank 0 reports (core.robust.distributed).
    ranks = Ranks.of_process_group(target)
    ranks.check_batch_size(config.batch_size)
    if not ranks.is_leader:
        on_epoch = on_batch = on_probe_batch = on_decision = None
    should_stop = ranks.agreed(should_stop)
    working = copy_model(model).to(target)
    optimizer = resolve_optimizer(config.optimizer, working)
    start_state = cpu_copy(working)
    val_subset = None
    if val is not None:
        val_subset = val.subset(
            evaluation_subset(val, max_samples=config.val_max_samples, seed=config.seed)
        )
    if resume is None:
        torch.manual_seed(config.seed)
        if val_subset is not None and reference_clean_accuracy is None:
            # A clean pass, no randomness drawn: a run measured so and one resumed (which reads
            # the value from its checkpoint) stay bit-identical.
            reference_clean_accuracy = ranks.broadcast_float(
                accuracy(working, val_subset, batch_size=256, device=target)
            )
    probe: LrProbe | None = None
    if resume is not None:
        peak_lr = config.peak_lr or resume["peak_lr"]
    elif config.peak_lr is not None:
        peak_lr = config.peak_lr
    else:
        probe = probe_peak_lr(
            working, train, val_subset, threat, replace(config, optimizer=optimizer),
            device=target, on_batch=on_probe_batch, finetune=adversarial_finetune,
        )  # fmt: skip
        peak_lr = ranks.broadcast_float(probe.chosen_lr)
        # The probe's runs drew from the global generator (dropout): the run starts as one
        # given peak_lr=probe.chosen_lr would, so that rate reproduces it.
        torch.manual_seed(config.seed)
        if on_decision is not None:
            on_decision(probe)
    run = FinetuneRun(
        working, train, threat, config, target,
        peak_lr=peak_lr, optimizer=optimizer, start_state=start_state, ranks=ranks,
    )  # fmt: skip
    if resume is not None:
        run.restore(resume)
    else:
        run.reference_clean_accuracy = reference_clean_accuracy if val_subset is not None else None
        run.lr_probe = probe
        if config.guards:
            run.guard.start_loss, run.guard.num_classes = start_loss(
                working, train, threat, config, device=target
            )
            run.guard.start_loss = ranks.broadcast_float(run.guard.start_loss)
    with cudnn_benchmark(run.speed):
        stopped = _train_epochs(
            run, val_subset,
            on_epoch=on_epoch, on_batch=on_batch, on_decision=on_decision, should_stop=should_stop,
        )  # fmt: skip
    return _finish(run, val_subset, stopped=stopped, on_decision=on_decision)


def _train_epochs(
    run: FinetuneRun,
    val_subset: TrainingImages | None,
    *,
    on_epoch: OnEpoch | None,
    on_batch: OnBatch | None,
    on_decision: OnDecision | None,
    should_stop: Callable[[], bool] | None,
) -> bool:
    """The epochs left to train; whether should_stop() ended them early."""
    while run.epoch < run.config.epochs and not run.stopped_early:
        # After the epoch's checkpoint went out, so a resumed run takes the same step back.
        step_back_from_collapse(run, on_decision=on_decision)
        if run.stopped_early:
            break
        training = train_one_epoch(
            run, on_batch=on_batch, should_stop=should_stop, on_decision=on_decision
        )
        if training is None:
            return True
        run.epoch += 1
        metrics = end_epoch(run, training, val_subset)
        if on_epoch is not None:
            on_epoch(metrics, run.checkpoint())
    return False


def _finish(
    run: FinetuneRun,
    val_subset: TrainingImages | None,
    *,
    stopped: bool,
    on_decision: OnDecision | None,
) -> FinetuneResult:
    """Leave the best weights in the model (or, when the best epoch lost clean accuracy, the
    mix with the starting ones that the interpolation found) and describe the run."""
    config = run.config
    if config.guards and run.best_tier == COLLAPSED:
        # Every epoch collapsed: the starting model is better than any of them.
        run.best_epoch, run.best_state = 0, run.start_state
    if run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    interpolation = None
    if (
        not stopped
        and run.best_tier == LOST
        and config.weight_interpolation
        and val_subset is not None
    ):
        interpolation = _interpolate_toward_start(run, val_subset)
        if on_decision is not None:
            on_decision(interpolation)
    release_model(run.model)  # channels_last weights back to the default layout
    run.model.eval()
    return FinetuneResult(
        model=run.model,
        best_epoch=run.best_epoch,
        history=run.history,
        stopped=stopped,
        reference_clean_accuracy=run.reference_clean_accuracy,
        best_meets_clean_constraint=run.best_tier == KEPT
        or (interpolation is not None and interpolation.fraction is not None),
        peak_lr=run.peak_lr,
        lr_probe=run.lr_probe,
        optimizer=run.optimizer_name,
        precision=run.speed.precision,
        guard_decisions=run.guard_decisions,
        stopped_early=run.stopped_early,
        interpolation=interpolation,
    )


def _interpolate_toward_start(run: FinetuneRun, val_subset: TrainingImages) -> Interpolation:
    """The best epoch lost clean accuracy: search the line back to the starting weights for
    the most robust mix that keeps it, and leave that (or the best epoch) in run.model."""
    assert run.best_state is not None and run.reference_clean_accuracy is not None
    reference = run.reference_clean_accuracy
    best = run.history[run.best_epoch - 1]
    assert best.val_clean_accuracy is not None and best.val_robust_accuracy is not None

    def score(state: dict[str, torch.Tensor]) -> tuple[float, float]:
        run.model.load_state_dict(state)
        return run.validate(val_subset)

    interpolation, state = search_line(
        run.start_state,
        run.best_state,
        from_epoch=run.best_epoch,
        tuned_scores=(best.val_clean_accuracy, best.val_robust_accuracy),
        score=score,
        kept=lambda clean: kept_clean(clean, reference, run.config.max_clean_drop),
    )
    run.model.load_state_dict(state)
    return interpolation
