"""Accuracy against epsilon from one search per example, not one attack per radius.

A ball contains every smaller one, so an example fooled at radius r is fooled at every larger
radius, and (for an attack whose strength grows with its radius, as PGD's does) one that
resists r resists every smaller radius. The curve is therefore searched outward from the
headline radius, whose per-example result the ensemble already gives:
- above it, in increasing order, only the examples that still resist are attacked;
- below it, in decreasing order, only the examples fooled at the next larger radius are.
Each example is attacked only until its place on the curve is known: the whole curve costs
about one attack over the examples, where attacking every radius afresh cost one per radius.
The curve is monotone by construction; the sanity check that accuracy falls with epsilon is
made instead on independent attacks over a subset (core.robust.evaluation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.robust.datasets.splits import TrainingImages
from core.robust.measure import Attack, survivors

AttackAt = Callable[[float], Attack]  # the attack at a radius


def robust_by_epsilon(
    model: nn.Module,
    dataset: TrainingImages,
    *,
    epsilon: float,
    robust_at_epsilon: torch.Tensor,
    correct: torch.Tensor,
    radii: list[float],
    attack_at: AttackAt,
    batch_size: int,
    device: torch.device,
) -> dict[float, torch.Tensor]:
    """Per radius (0, `epsilon` and each of `radii`): a boolean per example, robust there."""
    robust = {0.0: correct, epsilon: robust_at_epsilon}
    alive = robust_at_epsilon
    for radius in sorted(r for r in radii if r > epsilon):
        alive = survivors(
            model, dataset, alive, attack_at(radius), batch_size=batch_size, device=device
        )
        robust[radius] = alive
    held = robust_at_epsilon
    fooled = correct & ~robust_at_epsilon
    for radius in sorted((r for r in radii if 0 < r < epsilon), reverse=True):
        resisted = survivors(
            model, dataset, fooled, attack_at(radius), batch_size=batch_size, device=device
        )
        held = held | resisted
        fooled = fooled & ~resisted
        robust[radius] = held
    return dict(sorted(robust.items()))
