"""Guards while fine-tuning: notice a run going wrong before its budget is wasted.

Two signs are watched. A training loss that climbs far above its early level: its mean over
WINDOW batches above LOSS_FACTOR times the starting model's own adversarial loss at the full
radius (measured once, on one batch, before training: the highest a healthy run starts from,
since the epsilon ramp-up makes the first batches' loss small) or times log(classes), the
loss of a uniform guess, whichever is larger; or a loss that becomes NaN or infinite. And
validation clean accuracy that collapses at an epoch's end: to within COLLAPSE_SHARE of the
way from chance (1 / classes) up to the starting model's. Slow start, fast decay dips clean
accuracy at its peak rate and recovers it as the rate decays: on digits a healthy PGD run dips
30 points and a TRADES run 50 at the peak, and both end within a few points of the start; a
model near chance, predicting one class, is no dip.
Either makes the run step back: the best weights so far (or the starting ones, when no epoch
is good enough) are restored, the momentum dropped and every later rate multiplied by
BACKOFF_FACTOR. After MAX_BACKOFFS steps back the next sign stops the run early, with the best
epoch so far. Every decision is a `GuardDecision`, reported as it is taken.

The state is plain numbers kept in the checkpoint, so a resumed run decides as the first did.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

LOSS_FACTOR = 3.0
WINDOW = 5  # the loss compared: the mean of the latest batches
COLLAPSE_SHARE = 0.25
BACKOFF_FACTOR = 0.3
MAX_BACKOFFS = 2

Reason = Literal["loss_spike", "loss_not_finite", "clean_collapse"]
Action = Literal["stepped_back", "stopped"]


@dataclass(frozen=True)
class GuardDecision:
    epoch: int  # 1-based: the epoch it was taken in
    step: int  # the run's training step (0-based count of steps taken)
    reason: Reason
    action: Action
    value: float  # the loss (mean of the window) or the validation clean accuracy
    threshold: float  # the bound it crossed
    lr_scale: float  # the factor on every rate from now on
    restored_epoch: int  # whose weights were restored: 0 = the starting model's
    message: str


@dataclass
class GuardState:
    """The guards' memory: the starting loss, the latest losses, the backoffs taken."""

    start_loss: float = 0.0  # the starting model's adversarial loss at the full radius
    num_classes: int = 2  # the model's outputs: chance level is 1 / this
    lr_scale: float = 1.0
    backoffs: int = 0
    recent_losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> GuardState:
        return cls(**values) if values else cls()

    def observe_loss(self, loss: float) -> tuple[Reason, float, float] | None:
        """Record a batch's loss; (reason, value, threshold) when it is a sign to act on."""
        if not math.isfinite(loss):
            return "loss_not_finite", loss, math.inf
        self.recent_losses = [*self.recent_losses, loss][-WINDOW:]
        if len(self.recent_losses) < WINDOW:
            return None
        threshold = LOSS_FACTOR * max(self.start_loss, math.log(max(self.num_classes, 2)))
        level = sum(self.recent_losses) / len(self.recent_losses)
        return ("loss_spike", level, threshold) if level > threshold else None

    def forget_recent(self) -> None:
        """After a step back the latest losses belong to weights that are gone."""
        self.recent_losses = []

    def collapse_threshold(self, reference_clean_accuracy: float) -> float:
        """Validation clean accuracy below this is a collapse."""
        chance = 1 / max(self.num_classes, 2)
        return chance + COLLAPSE_SHARE * (reference_clean_accuracy - chance)


def describe(decision_reason: Reason, value: float, threshold: float) -> str:
    if decision_reason == "loss_not_finite":
        return f"the training loss became {value}"
    if decision_reason == "loss_spike":
        return f"the training loss climbed to {value:.3g} (bound {threshold:.3g})"
    return f"validation clean accuracy fell to {value:.3f} (collapse below {threshold:.3f})"
