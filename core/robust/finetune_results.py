"""What a fine-tuning run hands back (FinetuneResult, with one EpochMetrics per epoch) and the
callbacks through which it reports while it trains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from core.robust.checkpoint import Checkpoint
from core.robust.guards import GuardDecision
from core.robust.interpolation import Interpolation
from core.robust.lr_probe import LrProbe


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
    precision: str = "fp32"  # the training step's: the config's, or "auto" resolved for the run
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
# The probe's progress: (candidate, candidates, step, steps, its share of the training work);
# may raise to stop the run.
OnProbeBatch = Callable[[int, int, int, int, float], None]
OnDecision = Callable[[LrProbe | GuardDecision | Interpolation], None]
