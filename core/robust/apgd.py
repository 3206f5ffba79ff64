"""APGD, the step-size-free PGD of AutoAttack, untargeted (CE or DLR loss) and targeted (DLR).

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML). APGD is PGD with momentum 0.75 whose step size starts at
2 * epsilon and is halved at checkpoints where the loss has stopped rising (fewer than 75% of
the steps since the last checkpoint raised it, or neither the step size nor the best loss
changed); each halving restarts from the best point found so far. DLR is a margin loss divided
by a spread of the logits, so it cannot be gamed by rescaling them.

Ours, following the paper and its reference code (fra31/auto-attack, and torchattacks 3.5.1's
port of it), not copied from either: the checkpoints are the paper's ceil(p_j * steps), where
the reference rounds each interval down (the same for 100 steps, not for 20); the oscillation
test is the paper's strict "below rho" and its no-progress test applies from the first
checkpoint on (the reference skips it there); an example keeps its first fooling iterate, where
the reference keeps its last; an example that nothing fools gets its highest-loss point, where
the reference returns it clean.

Cost: `steps` forward and backward passes per restart (APGD) or per target class (APGD-T), over
the examples still unfooled, plus one clean forward pass: APGD-T with 9 targets costs about 9
times APGD with 1 restart, and 100 steps 5 times PGD-20.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from core.robust.attacks import (
    AttackLoss,
    ascent_step,
    cross_entropy_per_example,
    eval_mode,
    project,
    random_start,
)
from core.robust.threat import ThreatModel

INITIAL_STEP_FRACTION = 2.0  # the step size starts at 2 * epsilon
MOMENTUM = 0.75
RHO = 0.75  # a checkpoint halves the step size when fewer than this fraction of steps helped
LOSSES = ("ce", "dlr")

# The checkpoints p_j in hundredths of the run, so the schedule is exact: p_1 = 0.22, and each
# interval is 0.03 shorter than the one before, but never shorter than 0.06.
_FIRST_INTERVAL, _INTERVAL_DECREASE, _MIN_INTERVAL = 22, 3, 6

# loss(rows) -> the per-example loss for the examples `rows` of the batch (a target per row).
RunLoss = Callable[[torch.Tensor], AttackLoss]


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR per example: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12).

    z_pi1 >= z_pi2 >= ... are the sorted logits; needs at least 3 classes.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    ordered = logits.sort(dim=1, descending=True).values
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    best_other = torch.where(logits.argmax(1) == labels, ordered[:, 1], ordered[:, 0])
    return -(true_logit - best_other) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def targeted_dlr_loss(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """AutoAttack's targeted DLR per example: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12).

    Needs at least 3 classes; with exactly 3 there is no z_pi4 and the spread is z_pi1 - z_pi3
    (the untargeted DLR's).
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, got {logits.shape[1]}")
    ordered = logits.sort(dim=1, descending=True).values
    low = ordered[:, 2] if logits.shape[1] == 3 else (ordered[:, 2] + ordered[:, 3]) / 2
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)
    return -(true_logit - target_logit) / (ordered[:, 0] - low + 1e-12)


def _checkpoints(steps: int) -> list[int]:
    """The iterations ceil(p_j * steps), 0 < p_j < 1, after which the step size may halve."""
    points: list[int] = []
    position, interval = 0, _FIRST_INTERVAL
    while True:
        position += interval
        iteration = -(-position * steps // 100)
        if iteration >= steps:
            return points
        if not points or iteration > points[-1]:
            points.append(iteration)
        interval = max(interval - _INTERVAL_DECREASE, _MIN_INTERVAL)


def _per_row(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example tensor shaped to broadcast against a batch like `like`."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


def _into_threat(x: torch.Tensor, point: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """`point` projected into the ball around `x`, then into [0,1] (which keeps it in the ball)."""
    return (x + project(point - x, threat)).clamp(0, 1)


def _surface_start(
    x: torch.Tensor, threat: ThreatModel, generator: torch.Generator | None
) -> torch.Tensor:
    """A random point on the ball's surface: random_start's direction at full radius."""
    delta = random_start(x, threat, generator).flatten(1)
    length = delta.abs().amax(1) if threat.norm == "linf" else delta.norm(dim=1)
    scale = threat.epsilon / length.clamp_min(1e-12)
    return _into_threat(x, x + _per_row(scale, x) * delta.view_as(x), threat)


def _loss_and_gradient(
    model: nn.Module, x_adv: torch.Tensor, labels: torch.Tensor, loss: AttackLoss
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, per-example loss and its gradient w.r.t. the input (parameters' .grad untouched)."""
    with torch.enable_grad():
        x_adv = x_adv.detach().requires_grad_(True)
        logits = model(x_adv)
        per_example = loss(logits, labels)
        (gradient,) = torch.autograd.grad(per_example.sum(), x_adv)
    return logits.detach(), per_example.detach(), gradient


@dataclass
class _Run:
    """One APGD run's per-example state: where it is, where it was, and the best it found."""

    x: torch.Tensor
    labels: torch.Tensor
    iterate: torch.Tensor
    previous: torch.Tensor
    gradient: torch.Tensor
    loss: torch.Tensor
    step_size: torch.Tensor
    best: torch.Tensor
    best_loss: torch.Tensor
    best_gradient: torch.Tensor
    fooled: torch.Tensor
    first_fooling: torch.Tensor
    successes: torch.Tensor
    best_loss_at_checkpoint: torch.Tensor
    halved_at_checkpoint: torch.Tensor

    @classmethod
    def start(
        cls,
        x: torch.Tensor,
        labels: torch.Tensor,
        threat: ThreatModel,
        start: torch.Tensor,
        evaluated: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> _Run:
        """The state at the random start, from its (logits, loss, gradient)."""
        logits, loss, gradient = evaluated
        fooled = logits.argmax(1) != labels
        return cls(
            x=x,
            labels=labels,
            iterate=start,
            previous=start,
            gradient=gradient,
            loss=loss,
            step_size=torch.full_like(loss, INITIAL_STEP_FRACTION * threat.epsilon),
            best=start,
            best_loss=loss,
            best_gradient=gradient,
            fooled=fooled,
            first_fooling=torch.where(_per_row(fooled, x), start, x),
            successes=torch.zeros_like(loss),
            best_loss_at_checkpoint=loss,
            halved_at_checkpoint=torch.zeros_like(fooled),
        )

    def step(self, threat: ThreatModel, momentum: float) -> None:
        """z = P(x_k + eta * ascent); x_{k+1} = P(x_k + a (z - x_k) + (1 - a) (x_k - x_{k-1}))."""
        direction = ascent_step(self.gradient, threat, 1.0)
        z = _into_threat(
            self.x, self.iterate + _per_row(self.step_size, self.x) * direction, threat
        )
        moved = momentum * (z - self.iterate) + (1 - momentum) * (self.iterate - self.previous)
        following = _into_threat(self.x, self.iterate + moved, threat)
        self.previous, self.iterate = self.iterate, following

    def record(self, logits: torch.Tensor, loss: torch.Tensor, gradient: torch.Tensor) -> None:
        """Take in the loss at the new iterate: success count, best point, first fooling point."""
        newly_fooled = (logits.argmax(1) != self.labels) & ~self.fooled
        self.first_fooling = torch.where(
            _per_row(newly_fooled, self.x), self.iterate, self.first_fooling
        )
        self.fooled = self.fooled | newly_fooled
        self.successes = self.successes + (loss > self.loss).to(loss.dtype)
        improved = loss > self.best_loss
        self.best = torch.where(_per_row(improved, self.x), self.iterate, self.best)
        self.best_gradient = torch.where(_per_row(improved, self.x), gradient, self.best_gradient)
        self.best_loss = torch.where(improved, loss, self.best_loss)
        self.loss, self.gradient = loss, gradient

    def checkpoint(self, interval: int) -> None:
        """Halve the step where the loss stalled and go back to the best point (the paper's
        conditions 1 and 2); `interval` is the number of steps since the last checkpoint."""
        oscillating = self.successes < RHO * interval
        stalled = ~self.halved_at_checkpoint & (self.best_loss <= self.best_loss_at_checkpoint)
        halve = oscillating | stalled
        rows = _per_row(halve, self.x)
        self.step_size = torch.where(halve, self.step_size / 2, self.step_size)
        self.iterate = torch.where(rows, self.best, self.iterate)
        self.gradient = torch.where(rows, self.best_gradient, self.gradient)
        self.loss = torch.where(halve, self.best_loss, self.loss)
        self.halved_at_checkpoint = halve
        self.best_loss_at_checkpoint = self.best_loss
        self.successes = torch.zeros_like(self.successes)


@torch.no_grad()
def _apgd_once(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    loss: AttackLoss,
    generator: torch.Generator | None,
) -> _Run:
    start = _surface_start(x, threat, generator)
    run = _Run.start(x, labels, threat, start, _loss_and_gradient(model, start, labels, loss))
    checkpoints = _checkpoints(steps)
    last_checkpoint = 0
    for step in range(1, steps + 1):
        # The first step has no previous one to carry momentum from.
        run.step(threat, MOMENTUM if step > 1 else 1.0)
        if step == steps:
            # The last iterate needs its loss, not its gradient (no step follows it).
            logits = model(run.iterate)
            run.record(logits, loss(logits, labels), run.gradient)
            break
        run.record(*_loss_and_gradient(model, run.iterate, labels, loss))
        if step in checkpoints:
            run.checkpoint(step - last_checkpoint)
            last_checkpoint = step
    return run


def _strongest_of_runs(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    losses_for: Callable[[torch.Tensor], Sequence[RunLoss]],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One APGD run per loss (`losses_for(clean_logits)` chooses them), each on the examples no
    earlier run fooled: per example the first fooling iterate of the first run that fooled it,
    else the highest-loss point of any run. The model is in eval mode throughout."""
    with eval_mode(model):
        with torch.no_grad():
            clean_logits = model(x)
        run_losses = losses_for(clean_logits)
        x, labels = x.detach(), labels.detach()
        fooled = clean_logits.argmax(1) != labels
        adversarial = x.clone()  # examples the model gets wrong already stay as they are
        best_loss = torch.full(fooled.shape, -torch.inf, dtype=x.dtype, device=x.device)
        for run_loss in run_losses:
            rows = (~fooled).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            run = _apgd_once(
                model,
                x[rows],
                labels[rows],
                threat,
                steps=steps,
                loss=run_loss(rows),
                generator=generator,
            )
            chosen = torch.where(_per_row(run.fooled, run.x), run.first_fooling, run.best)
            take = run.fooled | (run.best_loss > best_loss[rows])
            adversarial[rows[take]] = chosen[take]
            best_loss[rows[take]] = run.best_loss[take]
            fooled[rows] = run.fooled
        return adversarial


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted APGD-CE (`loss="ce"`) or APGD-DLR (`loss="dlr"`) in the threat's ball.

    Only the threat's norm and epsilon are read: APGD sets its own step size, starts on the
    ball's surface at random (from `generator`) and runs `steps` steps per restart. DLR needs
    3 classes; a model with fewer is attacked with CE instead.
    """
    _check_steps(steps)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")

    def losses_for(clean_logits: torch.Tensor) -> list[RunLoss]:
        per_example: AttackLoss = (
            dlr_loss if loss == "dlr" and clean_logits.shape[1] >= 3 else cross_entropy_per_example
        )
        return [lambda _rows: per_example] * restarts

    return _strongest_of_runs(
        model, x, labels, threat, steps=steps, losses_for=losses_for, generator=generator
    )


def apgd_targeted(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    target_classes: int = 9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD-T as in standard AutoAttack: one targeted-DLR run of `steps` steps for each of the
    `target_classes` highest-scoring wrong classes at x (capped at num_classes - 1).

    Only the threat's norm and epsilon are read. A 2-class model has one target, the other
    class, and is attacked with CE (pushing the label down is pushing the target up).
    An unfooled example gets the point of highest targeted DLR over its targets.
    """
    _check_steps(steps)
    if target_classes < 1:
        raise ValueError(f"target_classes must be at least 1, got {target_classes}")

    def losses_for(clean_logits: torch.Tensor) -> list[RunLoss]:
        ranked = clean_logits.argsort(dim=1, descending=True)
        num_classes = ranked.shape[1]
        if num_classes < 2:
            raise ValueError(f"a targeted attack needs at least 2 classes, got {num_classes}")

        def toward_rank(rank: int) -> RunLoss:
            # Rank 0 is the label for every example still to fool (it is classified right).
            def loss_for(rows: torch.Tensor) -> AttackLoss:
                if num_classes < 3:
                    return cross_entropy_per_example
                targets = ranked[rows, rank]
                return lambda logits, labels: targeted_dlr_loss(logits, labels, targets)

            return loss_for

        ranks = range(1, min(target_classes, num_classes - 1) + 1)
        return [toward_rank(rank) for rank in ranks]

    return _strongest_of_runs(
        model, x, labels, threat, steps=steps, losses_for=losses_for, generator=generator
    )
