"""FGSM and PGD in Linf and L2, in [0,1] pixel space, with random start and restarts.

The model is put in eval mode while an attack runs (BatchNorm statistics untouched, dropout
off: the attack should see the function being attacked, not a noisy training version of it)
and its mode is restored afterwards. Gradients are taken with respect to the input only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from core.robust.threat import ThreatModel

# loss(logits, labels) -> one loss per example; the attack ascends it.
AttackLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

FP16_ATTACK_LOSS_SCALE = 1024.0


def cross_entropy_per_example(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with `model` in eval mode; restore each submodule's mode afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, was_training in modes:
            module.training = was_training


def _flat_norm(tensor: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norm, shaped to broadcast against NCHW."""
    norms = tensor.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
    return norms.view(-1, *([1] * (tensor.ndim - 1)))


def project(delta: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """The closest point to `delta` inside the threat model's ball."""
    if threat.norm == "linf":
        return delta.clamp(-threat.epsilon, threat.epsilon)
    factor = (threat.epsilon / _flat_norm(delta)).clamp(max=1.0)
    return delta * factor


def random_start(
    x: torch.Tensor, threat: ThreatModel, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniformly random point of the ball (Linf) or a random direction and radius (L2)."""
    if threat.norm == "linf":
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (2 * noise - 1) * threat.epsilon
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    radius = torch.rand((x.shape[0],), generator=generator, dtype=x.dtype, device=x.device)
    radius = radius.view(-1, *([1] * (x.ndim - 1))) * threat.epsilon
    return direction / _flat_norm(direction) * radius


def ascent_step(gradient: torch.Tensor, threat: ThreatModel, step_size: float) -> torch.Tensor:
    """The steepest ascent step of length `step_size` in the threat model's norm."""
    if threat.norm == "linf":
        return step_size * gradient.sign()
    return step_size * gradient / _flat_norm(gradient)


def _input_gradient(
    model: nn.Module, x_adv: torch.Tensor, labels: torch.Tensor, loss: AttackLoss
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at `x_adv` and the loss's gradient w.r.t. `x_adv` (parameters' .grad
    untouched)."""
    x_adv = x_adv.detach().requires_grad_(True)
    raw_logits = model(x_adv)
    # Under autocast (a mixed-precision training step) the logits come in bf16 or fp16: the
    # loss is taken in fp32, and x_adv, delta and the projection stay fp32 throughout.
    logits = raw_logits.float()
    total = loss(logits, labels).sum()
    if raw_logits.dtype != torch.float16:
        (gradient,) = torch.autograd.grad(total, x_adv)
        return logits.detach(), gradient
    # fp16's backward underflows the small input gradients of a confident model to zero (no
    # step there); a constant factor moves them up and changes neither the gradient's sign
    # (Linf) nor its direction (L2). Should it overflow, the unscaled gradient is taken.
    (gradient,) = torch.autograd.grad(total * FP16_ATTACK_LOSS_SCALE, x_adv, retain_graph=True)
    if not bool(torch.isfinite(gradient).all()):
        (gradient,) = torch.autograd.grad(total, x_adv)
    return logits.detach(), gradient


def _start(x: torch.Tensor, threat: ThreatModel, generator: torch.Generator | None) -> torch.Tensor:
    """The first delta: random (or zero), kept inside [0,1]."""
    delta = random_start(x, threat, generator) if threat.random_start else torch.zeros_like(x)
    return (x + delta).clamp(0, 1) - x


def _pgd_once(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    loss: AttackLoss,
    generator: torch.Generator | None,
) -> torch.Tensor:
    step_size = threat.resolved_step_size
    delta = _start(x, threat, generator)
    for _ in range(threat.steps):
        _, gradient = _input_gradient(model, x + delta, labels, loss)
        delta = project(delta + ascent_step(gradient, threat, step_size), threat)
        # Keep the image valid: the clamp can only shrink delta, so it stays inside the ball.
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    restarts: int = 1,
    loss: AttackLoss = cross_entropy_per_example,
    generator: torch.Generator | None = None,
    stop_when_fooled: bool = False,
) -> torch.Tensor:
    """Projected gradient descent (ascent on `loss`) inside the threat model's ball.

    With several restarts each example keeps the first restart that fools the model, or
    else the one with the highest loss.
    With `stop_when_fooled` (evaluation only: training wants the full-strength points) each
    example stops at the first point that fools the model, and no later step or restart
    computes on it; `loss` must then be per example (a row's loss from its own row alone).
    """
    with eval_mode(model):
        if stop_when_fooled:
            return _pgd_until_fooled(
                model, x, labels, threat, restarts=restarts, loss=loss, generator=generator
            )
        best = _pgd_once(model, x, labels, threat, loss=loss, generator=generator)
        if restarts == 1:
            return best
        with torch.no_grad():
            best_logits = model(best).float()
            best_fooled = best_logits.argmax(1) != labels
            best_loss = loss(best_logits, labels)
        for _ in range(restarts - 1):
            candidate = _pgd_once(model, x, labels, threat, loss=loss, generator=generator)
            with torch.no_grad():
                logits = model(candidate).float()
                fooled = logits.argmax(1) != labels
                candidate_loss = loss(logits, labels)
            better = (fooled & ~best_fooled) | (
                (fooled == best_fooled) & (candidate_loss > best_loss)
            )
            mask = better.view(-1, *([1] * (x.ndim - 1)))
            best = torch.where(mask, candidate, best)
            best_fooled = best_fooled | fooled
            best_loss = torch.where(better, candidate_loss, best_loss)
        return best


def _steps_until_fooled(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    delta: torch.Tensor,
    active: torch.Tensor,
    loss: AttackLoss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD's steps from `x + delta` on the rows `active` (a boolean per row) only; a row stays
    at the first point the model misclassifies. Returns the points and the rows still active,
    which no point before the last fooled (the last point is not checked here)."""
    step_size = threat.resolved_step_size
    delta, active = delta.clone(), active.clone()
    for _ in range(threat.steps):
        rows = active.nonzero().flatten()
        if len(rows) == 0:
            break
        # Eval mode makes each row's result independent of the others in the batch, so a
        # row still standing moves as it would in the whole batch (bit for bit on CPU; a GPU
        # kernel chosen by batch size may round differently).
        logits, gradient = _input_gradient(model, x[rows] + delta[rows], labels[rows], loss)
        # The logits are those of the point before this step: a row they misclassify stays.
        moving = logits.argmax(1) == labels[rows]
        active[rows[~moving]] = False
        rows, gradient = rows[moving], gradient[moving]
        stepped = project(delta[rows] + ascent_step(gradient, threat, step_size), threat)
        delta[rows] = (x[rows] + stepped).clamp(0, 1) - x[rows]
    return (x + delta).detach(), active


def _pgd_until_fooled(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    restarts: int,
    loss: AttackLoss,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """pgd(stop_when_fooled=True): each restart runs on the rows no earlier one fooled; a row
    keeps its first fooling point, or else, as without early stopping, the last point of the
    restart with the highest loss."""
    best = x.detach().clone()
    standing = torch.ones(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
    for restart in range(restarts):
        # Drawn for the whole batch, however few rows remain: the generator's stream (every
        # later start, in this batch and the next) stays as it is without early stopping.
        delta = _start(x, threat, generator)
        points, unchecked = _steps_until_fooled(
            model, x, labels, threat, delta=delta, active=standing, loss=loss
        )
        if restarts == 1:
            # No later restart needs to know whether the last points fool: the caller checks.
            return points
        fooled = standing & ~unchecked
        point_loss = torch.full_like(best_loss, -math.inf)
        rows = unchecked.nonzero().flatten()
        if len(rows):
            with torch.no_grad():
                logits = model(points[rows]).float()
            fooled[rows] = logits.argmax(1) != labels[rows]
            point_loss[rows] = loss(logits, labels[rows])
        # The first restart sets every row; a later one only rows it fools or raises the loss of.
        better = fooled | (standing & (point_loss > best_loss)) if restart else standing
        best = torch.where(better.view(-1, *([1] * (x.ndim - 1))), points, best)
        best_loss = torch.where(better, point_loss, best_loss)
        standing &= ~fooled
    return best


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    loss: AttackLoss = cross_entropy_per_example,
) -> torch.Tensor:
    """One step of the full radius along the gradient's sign (Linf) or direction (L2)."""
    with eval_mode(model):
        _, gradient = _input_gradient(model, x, labels, loss)
        delta = project(ascent_step(gradient, threat, threat.epsilon), threat)
        return (x + delta).clamp(0, 1).detach()


@torch.no_grad()
def random_noise(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    samples: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The best of `samples` random points on the ball's surface, no gradient used.

    A gradient-free baseline: when it beats PGD, the gradients are lying (masking).
    """
    with eval_mode(model):
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(samples):
            direction = random_start(x, threat, generator)
            if threat.norm == "linf":
                direction = direction.sign() * threat.epsilon
            else:
                direction = direction / _flat_norm(direction) * threat.epsilon
            candidate = (x + direction).clamp(0, 1)
            newly = (model(candidate).argmax(1) != labels) & ~fooled
            best[newly] = candidate[newly]
            fooled |= newly
        return best


@torch.no_grad()
def correct_predictions(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Boolean per example: does `model` classify it right (in eval mode)?"""
    with eval_mode(model):
        return model(x).argmax(1) == labels
