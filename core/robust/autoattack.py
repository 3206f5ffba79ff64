"""Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) through torchattacks, as a reference."""

from __future__ import annotations

import torch
from torch import nn

from core.robust.attacks import eval_mode
from core.robust.threat import ThreatModel


def run_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    num_classes: int,
    seed: int,
) -> torch.Tensor:
    """Adversarial examples from standard AutoAttack (Croce & Hein 2020) at the threat's radius."""
    import torchattacks  # imported here: it is slow to import and only this path needs it

    norm = "Linf" if threat.norm == "linf" else "L2"
    with eval_mode(model):
        attack = torchattacks.AutoAttack(
            model,
            norm=norm,
            eps=threat.epsilon,
            version="standard",
            n_classes=num_classes,
            seed=seed,
        )
        return attack(x, labels).detach()
