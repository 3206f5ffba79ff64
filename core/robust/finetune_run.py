"""The state of one fine-tuning run (FinetuneRun): the model, optimizer, schedule position, RNGs,
the best epoch so far and the guards' memory; what a checkpoint saves and a resume restores."""

from __future__ import annotations

import math
from dataclasses import asdict

import torch
from torch import nn

from core.robust.best_epoch import COLLAPSED, KEPT, LOST, rank_epoch
from core.robust.checkpoint import CHECKPOINT_FORMAT, Checkpoint
from core.robust.datasets.splits import TrainingImages
from core.robust.distributed import Ranks
from core.robust.errors import InvalidConfig
from core.robust.finetune_config import FinetuneConfig
from core.robust.finetune_results import EpochMetrics
from core.robust.guards import (
    BACKOFF_FACTOR,
    MAX_BACKOFFS,
    GuardDecision,
    GuardState,
    Reason,
    describe,
)
from core.robust.lr_probe import LrProbe, ProbeTrial
from core.robust.measure import clean_and_robust
from core.robust.optimizers import make_optimizer
from core.robust.precision import make_grad_scaler, prepare_model, resolve_speed
from core.robust.schedules import make_schedule
from core.robust.threat import ThreatModel


def cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's weights and buffers (the start, the best epoch)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


class FinetuneRun:
    """The state of one fine-tuning run: everything a checkpoint must capture."""

    def __init__(
        self,
        model: nn.Module,
        train: TrainingImages,
        threat: ThreatModel,
        config: FinetuneConfig,
        device: torch.device,
        *,
        peak_lr: float,
        optimizer: str,
        start_state: dict[str, torch.Tensor],
        ranks: Ranks | None = None,
    ) -> None:
        self.model, self.train, self.threat, self.config, self.device = (
            model,
            train,
            threat,
            config,
            device,
        )
        self.peak_lr = peak_lr
        self.ranks = ranks or Ranks(device=device)
        # The starting model's weights, for a step back before any epoch is good enough.
        self.start_state = start_state
        self.steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.schedule = make_schedule(
            config.schedule_config(peak_lr),
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
        )
        self.speed = resolve_speed(
            device,
            precision=config.precision,
            channels_last=config.channels_last,
            cudnn_benchmark=config.cudnn_benchmark,
            compile=config.compile,
            image_size=train.input_shape[1:],
        )
        # What the training step calls: the model, or its compiled wrapper over the same weights
        # (checkpoints and the result use self.model: no `_orig_mod.` in their keys), through
        # DDP across ranks.
        self.training_model = self.ranks.wrap(prepare_model(model, self.speed))
        self.grad_scaler = make_grad_scaler(self.speed)  # fp16 only
        self.optimizer_name = optimizer
        self.optimizer = make_optimizer(
            optimizer,
            model.parameters(),
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        # Own generators for data order and attack noise, so a run is fixed by its seed alone.
        self.order_generator = torch.Generator().manual_seed(config.seed)
        # Each rank attacks its own shard with its own noise (rank 0's is the single run's).
        self.noise_generator = torch.Generator(device=device).manual_seed(
            config.seed + 1 + self.ranks.rank
        )
        self.noise_states: list[torch.Tensor] = []  # every rank's, as of the last epoch's end
        # The crops and flips (on the CPU whatever the device): seed + 2 and + 3 are the
        # validation's and the probe's.
        self.augment_generator = torch.Generator().manual_seed(config.seed + 4)
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

    def rank(self, val_clean: float | None, val_robust: float | None) -> tuple[int, float]:
        """The current epoch's place in the choice of the best (core.robust.best_epoch)."""
        reference = self.reference_clean_accuracy
        collapse_threshold = None
        if self.config.guards and reference is not None:
            collapse_threshold = self.guard.collapse_threshold(reference)
        return rank_epoch(
            val_clean,
            val_robust,
            epoch=self.epoch,
            reference=reference,
            max_clean_drop=self.config.max_clean_drop,
            collapse_threshold=collapse_threshold,
        )

    def validate(self, val_subset: TrainingImages) -> tuple[float, float]:
        """Validation clean and PGD accuracy of the weights in self.model, with fixed noise."""
        # Each rank scores its share; the sums make the same numbers (and choices) everywhere.
        shard = self.ranks.shard_dataset(val_subset)
        clean, robust = clean_and_robust(
            self.model,
            shard,
            self.threat.with_steps(self.config.val_attack_steps),
            seed=self.config.seed + 2,
            batch_size=max(self.config.batch_size, 256),
            device=self.device,
        )
        clean, robust = self.ranks.means([clean, robust], len(shard))
        return clean, robust

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
                "noise_by_rank": self.noise_states,
                "augment": self.augment_generator.get_state(),
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
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
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
        by_rank = rng.get("noise_by_rank") or []
        own = len(by_rank) == self.ranks.world_size
        self.noise_generator.set_state(by_rank[self.ranks.rank] if own else rng["noise"])
        if "augment" in rng:  # a checkpoint from before augmentation trained without it
            self.augment_generator.set_state(rng["augment"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        if self.grad_scaler is not None and checkpoint.get("grad_scaler"):
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler"])
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


def check_resumable(checkpoint: Checkpoint, config: FinetuneConfig, threat: ThreatModel) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InvalidConfig("resume: not a robustify fine-tuning checkpoint")
    # A field added since the checkpoint was saved reads as its default (the run had none).
    saved_config = {**asdict(FinetuneConfig()), **checkpoint["config"]}
    if saved_config != asdict(config) or checkpoint["threat"] != asdict(threat):
        raise InvalidConfig("resume: the checkpoint was made with another config or threat model")
