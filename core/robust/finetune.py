"""Adversarial fine-tuning (AFT): PGD adversarial training that starts from pretrained weights.

After Jeddi et al. (arXiv 2012.13628): a few epochs of adversarial training under a
*slow start, fast decay* learning rate. Each epoch ends with a validation (clean and PGD
accuracy), a resumable checkpoint, and the `on_epoch` callback; the best epoch by validation
robust accuracy, among those that kept validation clean accuracy within `max_clean_drop` of the
starting model's, is what the run returns (robust overfitting is real, and a robust model that
lost its clean accuracy is no improvement).

Without a `peak_lr` the run first probes for one (core.robust.lr_probe); while it trains, the
guards (core.robust.guards) step back from a climbing loss or a collapsed clean accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from core.robust.attacks import eval_mode, pgd
from core.robust.batchnorm import has_batchnorm, recalibrate_batchnorm
from core.robust.checkpoint import CHECKPOINT_FORMAT, Checkpoint
from core.robust.datasets.loading import ImageDataset
from core.robust.errors import InvalidConfig, TrainingDiverged
from core.robust.finetune_config import ATTACKS, LOSSES, FinetuneConfig
from core.robust.guards import (
    BACKOFF_FACTOR,
    MAX_BACKOFFS,
    GuardDecision,
    GuardState,
    Reason,
    describe,
)
from core.robust.interpolation import Interpolation, search_line
from core.robust.lr_probe import (
    LrProbe,
    ProbePlan,
    ProbeTrial,
    choose_rate,
    plan_probe,
)
from core.robust.measure import accuracy, default_device, evaluation_subset
from core.robust.models.modelio import copy_model
from core.robust.optimizers import fallback_rate, make_optimizer, resolve_optimizer
from core.robust.schedules import make_schedule
from core.robust.threat import ThreatModel

__all__ = [
    "ATTACKS",
    "LOSSES",
    "EpochMetrics",
    "FinetuneConfig",
    "FinetuneResult",
    "adversarial_finetune",
]


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_robust_accuracy: float  # on the training batches' own adversarial examples
    lr: float  # at the epoch's last step
    epsilon: float  # at the epoch's last step (differs during a ramp-up)
    val_clean_accuracy: float | None
    val_robust_accuracy: float | None
    seconds: float  # training and validation of this epoch
    gradient_passes: int  # forward+backward passes of training so far (attack included)
    train_seconds: float  # training time so far, validation excluded


@dataclass
class FinetuneResult:
    model: nn.Module  # holds the best epoch's weights
    best_epoch: int  # 0: the guards found every epoch collapsed; the starting weights
    history: list[EpochMetrics] = field(default_factory=list)
    stopped: bool = False  # should_stop() asked the run to end early
    # The starting model's validation clean accuracy (None without a validation split), and
    # whether the best epoch kept within max_clean_drop of it (False: no epoch did, and the
    # most robust one was returned).
    reference_clean_accuracy: float | None = None
    best_meets_clean_constraint: bool = True
    peak_lr: float = 0.0  # the rate the run trained at: the config's, or the probe's choice
    lr_probe: LrProbe | None = None  # None: the config gave peak_lr
    optimizer: str = "sgd"  # the one the run used: the config's, or "auto"'s choice
    guard_decisions: list[GuardDecision] = field(default_factory=list)
    stopped_early: bool = False  # the guards ended the run before its last epoch
    # The search for a mix with the starting weights (None: not needed, or not asked for); with
    # its fraction set, `model` holds that mix and best_meets_clean_constraint is True.
    interpolation: Interpolation | None = None

    @property
    def best(self) -> EpochMetrics | None:
        return self.history[self.best_epoch - 1] if self.best_epoch else None


OnEpoch = Callable[[EpochMetrics, Checkpoint], None]
OnBatch = Callable[[int, int, int, float], None]  # (epoch, step in epoch, steps per epoch, loss)
# The probe's progress: (candidate, candidates, step, steps); may raise to stop the run.
OnProbeBatch = Callable[[int, int, int, int, float], None]
OnDecision = Callable[[LrProbe | GuardDecision | Interpolation], None]

# An epoch's tier in the choice of the best: kept clean accuracy within max_clean_drop, lost
# more, collapsed (the guards' bound). A higher tier always wins; within a tier, robustness.
KEPT, LOST, COLLAPSED = 2, 1, 0


def _trades_loss(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    beta: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TRADES: clean cross-entropy + beta * KL(clean || adversarial); x_adv maximizes the KL."""
    with torch.no_grad(), eval_mode(model):
        clean_probabilities = F.softmax(model(x), dim=1)

    def kl_to_clean(logits: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, dim=1), clean_probabilities, reduction="none").sum(1)

    x_adv = pgd(model, x, labels, threat, loss=kl_to_clean, generator=generator)
    clean_logits = model(x)
    adv_logits = model(x_adv)
    robust_term = F.kl_div(
        F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1), reduction="batchmean"
    )
    return F.cross_entropy(clean_logits, labels) + beta * robust_term, adv_logits


def _training_threat(threat: ThreatModel, config: FinetuneConfig, epsilon: float) -> ThreatModel:
    if config.attack == "fgsm":
        # FGSM from a random start, step 1.25·epsilon (Wong et al., "fast is better than free").
        return replace(
            threat, epsilon=epsilon, steps=1, step_size=1.25 * epsilon, random_start=True
        )
    scale = epsilon / threat.epsilon if threat.epsilon > 0 else 0.0
    return replace(threat, epsilon=epsilon, step_size=threat.resolved_step_size * scale)


class _Run:
    """The state of one fine-tuning run: everything a checkpoint must capture."""

    def __init__(
        self,
        model: nn.Module,
        train: ImageDataset,
        threat: ThreatModel,
        config: FinetuneConfig,
        device: torch.device,
        *,
        peak_lr: float,
        optimizer: str,
        start_state: dict[str, torch.Tensor],
    ) -> None:
        self.model, self.train, self.threat, self.config, self.device = (
            model,
            train,
            threat,
            config,
            device,
        )
        self.peak_lr = peak_lr
        # The starting model's weights, for a step back before any epoch is good enough.
        self.start_state = start_state
        self.steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.schedule = make_schedule(
            config.schedule_config(peak_lr),
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
        )
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(
            optimizer,
            model.parameters(),
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        # Own generators for data order and attack noise, so a run is fixed by its seed alone.
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.noise_generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.step = 0
        self.epoch = 0
        self.history: list[EpochMetrics] = []
        self.best_epoch = 0
        self.best_tier = -1
        self.best_robust_accuracy = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.reference_clean_accuracy: float | None = None
        self.gradient_passes = 0
        self.train_seconds = 0.0
        self.lr_probe: LrProbe | None = None
        self.guard = GuardState()
        self.guard_decisions: list[GuardDecision] = []
        self.stopped_early = False
        self.steps_since_restore = 0  # a non-finite loss right after a restore: hopeless
        self.collapse_handled_epoch = 0  # the epoch whose collapse check is done (not saved)

    def lr_at(self, step: int) -> float:
        return self.schedule(step) * self.guard.lr_scale

    def epsilon_at(self, step: int) -> float:
        rampup_steps = self.config.epsilon_rampup_fraction * self.total_steps
        if rampup_steps <= 0:
            return self.threat.epsilon
        return self.threat.epsilon * min(1.0, (step + 1) / rampup_steps)

    def step_back(self, reason: Reason, value: float, threshold: float) -> GuardDecision:
        """Restore the best good weights (else the starting ones) at a lower rate, or stop."""
        stop = self.guard.backoffs >= MAX_BACKOFFS
        if not stop:
            self.guard.backoffs += 1
            self.guard.lr_scale *= BACKOFF_FACTOR
        if self.best_state is not None and self.best_tier > COLLAPSED:
            self.model.load_state_dict(self.best_state)
            restored = self.best_epoch
        else:
            self.model.load_state_dict(self.start_state)
            restored = 0
        self.optimizer.state.clear()  # the momentum points where the run went wrong
        self.guard.forget_recent()
        self.steps_since_restore = 0
        weights = f"epoch {restored}'s weights" if restored else "the starting weights"
        if stop:
            self.stopped_early = True
            message = (
                f"{describe(reason, value, threshold)} after {MAX_BACKOFFS} steps back: "
                f"stopped early with {weights}"
            )
        else:
            message = (
                f"{describe(reason, value, threshold)}: stepped back to {weights}, every rate "
                f"from now on x{self.guard.lr_scale:.3g}"
            )
        decision = GuardDecision(
            epoch=self.epoch if reason == "clean_collapse" else self.epoch + 1,
            step=self.step,
            reason=reason,
            action="stopped" if stop else "stepped_back",
            value=value,
            threshold=threshold,
            lr_scale=self.guard.lr_scale,
            restored_epoch=restored,
            message=message,
        )
        self.guard_decisions.append(decision)
        return decision

    def checkpoint(self) -> Checkpoint:
        """The run as of now; its tensors are live references, saved by the caller at once."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.config),
            "threat": asdict(self.threat),
            "epoch": self.epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {
                "order": self.order_generator.get_state(),
                "noise": self.noise_generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device)
                if self.device.type == "cuda"
                else None,
            },
            "best": {
                "epoch": self.best_epoch,
                "robust_accuracy": self.best_robust_accuracy,
                "meets_clean_constraint": self.best_tier == KEPT,
                "tier": self.best_tier,
                "reference_clean_accuracy": self.reference_clean_accuracy,
                "model": self.best_state,
            },
            "history": [asdict(metrics) for metrics in self.history],
            "counters": {
                "gradient_passes": self.gradient_passes,
                "train_seconds": self.train_seconds,
            },
            "peak_lr": self.peak_lr,
            "lr_probe": asdict(self.lr_probe) if self.lr_probe is not None else None,
            "guards": {
                "state": self.guard.to_dict(),
                "decisions": [asdict(decision) for decision in self.guard_decisions],
                "stopped_early": self.stopped_early,
                "steps_since_restore": self.steps_since_restore,
            },
        }

    def restore(self, checkpoint: Checkpoint) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        rng = checkpoint["rng"]
        self.order_generator.set_state(rng["order"])
        self.noise_generator.set_state(rng["noise"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        best = checkpoint["best"]
        self.best_epoch, self.best_robust_accuracy = best["epoch"], best["robust_accuracy"]
        kept = best.get("meets_clean_constraint", True)
        self.best_tier = best.get("tier", KEPT if kept else LOST)
        # Taken from the checkpoint, never measured again: the weights have moved since.
        self.reference_clean_accuracy = best.get("reference_clean_accuracy")
        self.best_state = best["model"]
        self.history = [EpochMetrics(**metrics) for metrics in checkpoint["history"]]
        self.gradient_passes = checkpoint["counters"]["gradient_passes"]
        self.train_seconds = checkpoint["counters"]["train_seconds"]
        probe = checkpoint.get("lr_probe")
        if probe is not None:
            trials = [ProbeTrial(**trial) for trial in probe["trials"]]
            self.lr_probe = LrProbe(**{**probe, "trials": trials})
        guards = checkpoint.get("guards") or {}
        self.guard = GuardState.from_dict(guards.get("state"))
        self.guard_decisions = [GuardDecision(**d) for d in guards.get("decisions", [])]
        self.stopped_early = guards.get("stopped_early", False)
        self.steps_since_restore = guards.get("steps_since_restore", 0)


def _check_resumable(checkpoint: Checkpoint, config: FinetuneConfig, threat: ThreatModel) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InvalidConfig("resume: not a robustify fine-tuning checkpoint")
    if checkpoint["config"] != asdict(config) or checkpoint["threat"] != asdict(threat):
        raise InvalidConfig("resume: the checkpoint was made with another config or threat model")


def adversarial_finetune(
    model: nn.Module,
    train: ImageDataset,
    threat: ThreatModel,
    config: FinetuneConfig | None = None,
    *,
    val: ImageDataset | None = None,
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
        _check_resumable(resume, config, threat)
    working = copy_model(model).to(target)
    optimizer = resolve_optimizer(config.optimizer, working)
    start_state = {
        name: value.detach().to("cpu", copy=True) for name, value in working.state_dict().items()
    }
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
            reference_clean_accuracy = accuracy(working, val_subset, batch_size=256, device=target)
    probe: LrProbe | None = None
    if resume is not None:
        peak_lr = config.peak_lr or resume["peak_lr"]
    elif config.peak_lr is not None:
        peak_lr = config.peak_lr
    else:
        probe = _probe_peak_lr(
            working, train, val_subset, threat, replace(config, optimizer=optimizer),
            device=target, on_batch=on_probe_batch,
        )  # fmt: skip
        peak_lr = probe.chosen_lr
        # The probe's runs drew from the global generator (dropout): the run starts as one
        # given peak_lr=probe.chosen_lr would, so that rate reproduces it.
        torch.manual_seed(config.seed)
        if on_decision is not None:
            on_decision(probe)
    run = _Run(
        working, train, threat, config, target,
        peak_lr=peak_lr, optimizer=optimizer, start_state=start_state,
    )  # fmt: skip
    if resume is not None:
        run.restore(resume)
    else:
        run.reference_clean_accuracy = reference_clean_accuracy if val_subset is not None else None
        run.lr_probe = probe
        if config.guards:
            run.guard.start_loss, run.guard.num_classes = _start_loss(
                working, train, threat, config, device=target
            )
    stopped = False
    while run.epoch < config.epochs and not run.stopped_early:
        # After the epoch's checkpoint went out, so a resumed run takes the same step back.
        _step_back_from_collapse(run, on_decision=on_decision)
        if run.stopped_early:
            break
        training = _train_one_epoch(
            run, on_batch=on_batch, should_stop=should_stop, on_decision=on_decision
        )
        if training is None:
            stopped = True
            break
        run.epoch += 1
        metrics = _end_epoch(run, training, val_subset)
        if on_epoch is not None:
            on_epoch(metrics, run.checkpoint())
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
        guard_decisions=run.guard_decisions,
        stopped_early=run.stopped_early,
        interpolation=interpolation,
    )


def _interpolate_toward_start(run: _Run, val_subset: ImageDataset) -> Interpolation:
    """The best epoch lost clean accuracy: search the line back to the starting weights for
    the most robust mix that keeps it, and leave that (or the best epoch) in run.model."""
    assert run.best_state is not None and run.reference_clean_accuracy is not None
    reference = run.reference_clean_accuracy
    best = run.history[run.best_epoch - 1]
    assert best.val_clean_accuracy is not None and best.val_robust_accuracy is not None

    def score(state: dict[str, torch.Tensor]) -> tuple[float, float]:
        run.model.load_state_dict(state)
        return _validate(run, val_subset)

    interpolation, state = search_line(
        run.start_state,
        run.best_state,
        from_epoch=run.best_epoch,
        tuned_scores=(best.val_clean_accuracy, best.val_robust_accuracy),
        score=score,
        kept=lambda clean: _kept_clean(clean, reference, run.config.max_clean_drop),
    )
    run.model.load_state_dict(state)
    return interpolation


def _start_loss(
    model: nn.Module,
    train: ImageDataset,
    threat: ThreatModel,
    config: FinetuneConfig,
    *,
    device: torch.device,
) -> tuple[float, int]:
    """The starting model's adversarial loss at the full radius on one fixed training batch
    (the level the loss guard measures a climb against), and its number of outputs. Own
    generators, eval mode: the run's randomness and BatchNorm statistics stay as they were."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed + 5))
    batch = train.subset(order[: config.batch_size].sort().values)
    x, labels = next(iter(batch.batches(config.batch_size)))
    x, labels = x.to(device), labels.to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed + 5)
    with eval_mode(model):
        if config.loss == "trades":  # the loss the run minimizes, at the full radius
            loss_tensor, logits = _trades_loss(
                model, x, labels, threat, beta=config.trades_beta, generator=generator
            )
        else:
            logits = model(pgd(model, x, labels, threat, generator=generator))
            loss_tensor = F.cross_entropy(logits, labels)
    loss = loss_tensor.item()
    return (loss if math.isfinite(loss) else 0.0), logits.shape[1]


def _passes_per_step(config: FinetuneConfig, step_threat: ThreatModel) -> int:
    """Forward+backward batch passes of one training step (`step_threat`: its attack's)."""
    return step_threat.steps + (2 if config.loss == "trades" else 1)


def _probe_peak_lr(
    model: nn.Module,
    train: ImageDataset,
    val_subset: ImageDataset | None,
    threat: ThreatModel,
    config: FinetuneConfig,
    *,
    device: torch.device,
    on_batch: OnProbeBatch | None,
) -> LrProbe:
    """Try each rate of the grid for a few paired steps and keep the winner (lr_probe)."""
    if val_subset is None or len(val_subset) == 0:
        rate = fallback_rate(config.batch_size, config.optimizer)
        return LrProbe(
            chosen_lr=rate,
            reason=f"no validation split to probe on: the fallback rate {rate:.3g}",
        )
    started = time.perf_counter()
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    step_threat = _training_threat(threat, config, threat.epsilon)
    plan = plan_probe(
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        training_steps=steps_per_epoch * config.epochs,
        passes_per_step=_passes_per_step(config, step_threat),
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
    batches: ImageDataset,
    scored: ImageDataset,
    threat: ThreatModel,
    config: FinetuneConfig,
    plan: ProbePlan,
    rate: float,
    reference: float,
    *,
    device: torch.device,
    on_batch: OnBatch | None,
) -> tuple[ProbeTrial, int]:
    """One candidate: the run's schedule shape over the probe's steps, then scored."""
    epochs = max(1, math.ceil(plan.steps * config.batch_size / max(len(batches), 1)))
    trial_config = replace(config, epochs=epochs, peak_lr=rate, guards=False, seed=config.seed + 3)
    try:
        result = adversarial_finetune(
            model, batches, threat, trial_config, device=device, on_batch=on_batch
        )
    except TrainingDiverged:
        trial = ProbeTrial(
            lr=rate, val_clean_accuracy=0.0, val_robust_accuracy=0.0, kept_clean=False,
            diverged=True,
        )  # fmt: skip
        return trial, plan.steps * plan.passes_per_step
    recalibrate_batchnorm(result.model, batches, batch_size=config.batch_size, device=device)
    clean, robust = _clean_and_robust(
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
        kept_clean=_kept_clean(clean, reference, config.max_clean_drop),
    )
    return trial, result.history[-1].gradient_passes + plan.eval_passes


@dataclass(frozen=True)
class _EpochTraining:
    loss: float
    robust_accuracy: float
    seconds: float


def _train_one_epoch(
    run: _Run,
    *,
    on_batch: OnBatch | None,
    should_stop: Callable[[], bool] | None,
    on_decision: OnDecision | None,
) -> _EpochTraining | None:
    """One pass over the training data; None when should_stop() ended it early. The guards may
    step back within it, or end it (and the run) early."""
    config, model = run.config, run.model
    model.train()
    started = time.perf_counter()
    loss_sum, robust_correct, seen = 0.0, 0, 0
    for index, (x, labels) in enumerate(
        run.train.batches(config.batch_size, generator=run.order_generator)
    ):
        if should_stop is not None and should_stop():
            return None
        x, labels = x.to(run.device), labels.to(run.device)
        lr = run.lr_at(run.step)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        step_threat = _training_threat(run.threat, config, run.epsilon_at(run.step))
        if config.loss == "trades":
            loss, adv_logits = _trades_loss(
                model,
                x,
                labels,
                step_threat,
                beta=config.trades_beta,
                generator=run.noise_generator,
            )
        else:
            x_adv = pgd(model, x, labels, step_threat, generator=run.noise_generator)
            adv_logits = model(x_adv)
            loss = F.cross_entropy(adv_logits, labels)
        run.gradient_passes += _passes_per_step(config, step_threat)
        value = loss.item()
        if _guarded(run, value, lr=lr, on_decision=on_decision):
            if run.stopped_early:
                break
            continue  # this batch's update would come from weights that are gone
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.step += 1
        run.steps_since_restore += 1
        loss_sum += value * len(labels)
        robust_correct += int((adv_logits.argmax(1) == labels).sum())
        seen += len(labels)
        if on_batch is not None:
            on_batch(run.epoch + 1, index + 1, run.steps_per_epoch, value)
    seconds = time.perf_counter() - started
    run.train_seconds += seconds
    return _EpochTraining(
        loss=loss_sum / max(seen, 1), robust_accuracy=robust_correct / max(seen, 1), seconds=seconds
    )


def _guarded(run: _Run, loss: float, *, lr: float, on_decision: OnDecision | None) -> bool:
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


def _end_epoch(
    run: _Run, training: _EpochTraining, val_subset: ImageDataset | None
) -> EpochMetrics:
    """Validate, keep the best weights, and record the epoch."""
    started = time.perf_counter()
    val_clean = val_robust = None
    if val_subset is not None:
        val_clean, val_robust = _validate(run, val_subset)
    tier, score = _rank(run, val_clean, val_robust)
    if (tier, score) > (run.best_tier, run.best_robust_accuracy):
        run.best_tier, run.best_robust_accuracy = tier, score
        run.best_epoch = run.epoch
        run.best_state = {
            name: value.detach().to("cpu", copy=True)
            for name, value in run.model.state_dict().items()
        }
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


def _step_back_from_collapse(run: _Run, *, on_decision: OnDecision | None) -> None:
    """Before the next epoch: step back when the last one's clean accuracy collapsed."""
    if not run.history or run.collapse_handled_epoch == run.epoch:
        return
    last = run.history[-1]
    run.collapse_handled_epoch = run.epoch
    reference = run.reference_clean_accuracy
    if last.val_clean_accuracy is None or reference is None:
        return
    if _rank(run, last.val_clean_accuracy, last.val_robust_accuracy)[0] != COLLAPSED:
        return
    threshold = run.guard.collapse_threshold(reference)
    decision = run.step_back("clean_collapse", last.val_clean_accuracy, threshold)
    if on_decision is not None:
        on_decision(decision)


def _rank(run: _Run, val_clean: float | None, val_robust: float | None) -> tuple[int, float]:
    """An epoch's place in the choice of the best: its tier (kept clean accuracy within
    max_clean_drop of the start, lost more, or collapsed), then its robust accuracy. Handing
    back the least damaged epoch instead would hand back the uploaded model itself when every
    epoch costs clean accuracy: a holdout carved from the training data flatters the uploaded
    model, which has seen it. The job's verdict, on the test split, says whether the clean
    accuracy held. Without validation, the latest epoch wins."""
    if val_clean is None or val_robust is None:
        return KEPT, float(run.epoch)
    reference = run.reference_clean_accuracy
    if reference is None:
        return KEPT, val_robust
    if _kept_clean(val_clean, reference, run.config.max_clean_drop):
        return KEPT, val_robust
    if run.config.guards and val_clean < run.guard.collapse_threshold(reference):
        return COLLAPSED, val_robust
    return LOST, val_robust


def _kept_clean(clean: float, reference: float, max_clean_drop: float) -> bool:
    """Clean accuracy within max_clean_drop of the reference; the tolerance keeps an exact
    "drop == max_clean_drop" inside despite float rounding."""
    return clean >= reference - max_clean_drop - 1e-9


def _clean_and_robust(
    model: nn.Module,
    subset: ImageDataset,
    threat: ThreatModel,
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> tuple[float, float]:
    """Clean and PGD accuracy on a fixed subset, with its own fixed attack noise."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def attack(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, labels, threat, generator=generator)

    clean = accuracy(model, subset, batch_size=batch_size, device=device)
    robust = accuracy(model, subset, attack, batch_size=batch_size, device=device)
    return clean, robust


def _validate(run: _Run, val_subset: ImageDataset) -> tuple[float, float]:
    return _clean_and_robust(
        run.model,
        val_subset,
        run.threat.with_steps(run.config.val_attack_steps),
        seed=run.config.seed + 2,
        batch_size=max(run.config.batch_size, 256),
        device=run.device,
    )
