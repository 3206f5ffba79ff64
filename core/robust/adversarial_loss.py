"""The loss one fine-tuning step minimizes, on the attack it trains against.

PGD-AT (Madry et al.): cross-entropy on PGD's adversarial examples; TRADES (Zhang et al.): clean
cross-entropy plus beta * KL(clean || adversarial). The attack is PGD at the step's radius, or
FGSM from a random start in fast mode.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from core.robust.attacks import eval_mode, pgd
from core.robust.datasets.splits import TrainingImages
from core.robust.finetune_config import FinetuneConfig
from core.robust.threat import ThreatModel


def step_loss(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    config: FinetuneConfig,
    *,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss config.loss names on the batch, and the logits of its adversarial examples."""
    if config.loss == "trades":
        return trades_loss(model, x, labels, threat, beta=config.trades_beta, generator=generator)
    adv_logits = model(pgd(model, x, labels, threat, generator=generator))
    return F.cross_entropy(adv_logits, labels), adv_logits


def trades_loss(
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


def training_threat(threat: ThreatModel, config: FinetuneConfig, epsilon: float) -> ThreatModel:
    """The attack a training step uses at radius `epsilon` (below the threat's during a ramp-up)."""
    if config.attack == "fgsm":
        # FGSM from a random start, step 1.25·epsilon (Wong et al., "fast is better than free").
        return replace(
            threat, epsilon=epsilon, steps=1, step_size=1.25 * epsilon, random_start=True
        )
    scale = epsilon / threat.epsilon if threat.epsilon > 0 else 0.0
    return replace(threat, epsilon=epsilon, step_size=threat.resolved_step_size * scale)


def passes_per_step(config: FinetuneConfig, step_threat: ThreatModel) -> int:
    """Forward+backward batch passes of one training step (`step_threat`: its attack's)."""
    return step_threat.steps + (2 if config.loss == "trades" else 1)


def start_loss(
    model: nn.Module,
    train: TrainingImages,
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
    with eval_mode(model):  # the loss the run minimizes, at the full radius
        loss_tensor, logits = step_loss(model, x, labels, threat, config, generator=generator)
    loss = loss_tensor.item()
    return (loss if math.isfinite(loss) else 0.0), logits.shape[1]
