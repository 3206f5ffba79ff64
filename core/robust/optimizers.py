"""Which optimizer fine-tunes a model, chosen by its family, and the optimizer itself.

Families are trained with different optimizers, and fine-tuning keeps to the one a family was
trained with: BatchNorm convolutional networks (ResNet, MobileNet, RegNet) with SGD and
momentum, LayerNorm networks (ConvNeXt, ViT, Swin) with AdamW. Fine-tuned with SGD instead,
benchmarks/zoo.py's ConvNeXt lost 8.6 clean points or more at every rate and its ViT gained no
robustness at any rate (the zoo's run before AdamW; with AdamW the ViT keeps its clean accuracy
up to 2e-4, and ConvNeXt pays about 3 clean points for 30 of PGD-20 once the run interpolates
back toward its starting weights: README).
`optimizer="auto"` (the default) takes AdamW for a network with
LayerNorm layers and no BatchNorm, and SGD for every other one (the digits CNN, which has
neither, is SGD's: benchmarks/schedules.py chose its schedule so).

The optimizers' names and rates live in core.robust.optimizer_rates (torch-free); re-exported.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from core.robust.optimizer_rates import (
    BASE_RATES,
    FALLBACK_BASE_RATES,
    OPTIMIZERS,
    REFERENCE_BATCH_SIZE,
    candidate_rates,
    fallback_rate,
)

__all__ = [
    "BASE_RATES",
    "FALLBACK_BASE_RATES",
    "OPTIMIZERS",
    "REFERENCE_BATCH_SIZE",
    "candidate_rates",
    "fallback_rate",
    "make_optimizer",
    "resolve_optimizer",
]

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


def resolve_optimizer(name: str, model: nn.Module) -> str:
    """ "sgd" or "adamw": the name itself, or for "auto" the one the model's family uses."""
    if name != "auto":
        return name
    modules = list(model.modules())
    has_layer_norm = any(isinstance(module, nn.LayerNorm) for module in modules)
    has_batch_norm = any(isinstance(module, _BATCH_NORMS) for module in modules)
    return "adamw" if has_layer_norm and not has_batch_norm else "sgd"


def make_optimizer(
    name: str, parameters: Iterable[nn.Parameter], *, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The resolved optimizer at rate 0 (the schedule sets each step's rate). AdamW's weight
    decay is decoupled (times the rate), so the same small `weight_decay` pulls far less."""
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=0.0, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=0.0, momentum=momentum, weight_decay=weight_decay)
