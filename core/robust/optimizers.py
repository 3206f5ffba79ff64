"""Which optimizer fine-tunes a model, and the rates that suit it.

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

The two optimizers' rates differ by about 100x; each has its own grid for the probe
(core.robust.lr_probe), and its own fallback rate.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("auto", "sgd", "adamw")

# Rates at batch size REFERENCE_BATCH_SIZE, a 100x span in steps of about 3.16x; the probe's
# grid is these times batch_size / REFERENCE_BATCH_SIZE (the linear scaling rule).
BASE_RATES = {
    "sgd": (0.002, 0.006, 0.02, 0.06, 0.2),
    "adamw": (2e-5, 6e-5, 2e-4, 6e-4, 2e-3),
}
# Without a validation split there is nothing to score the probe's candidates on: this is used.
FALLBACK_BASE_RATES = {"sgd": 0.02, "adamw": 2e-4}
REFERENCE_BATCH_SIZE = 128

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


def resolve_optimizer(name: str, model: nn.Module) -> str:
    """ "sgd" or "adamw": the name itself, or for "auto" the one the model's family uses."""
    if name != "auto":
        return name
    modules = list(model.modules())
    has_layer_norm = any(isinstance(module, nn.LayerNorm) for module in modules)
    has_batch_norm = any(isinstance(module, _BATCH_NORMS) for module in modules)
    return "adamw" if has_layer_norm and not has_batch_norm else "sgd"


def candidate_rates(batch_size: int, optimizer: str = "sgd") -> list[float]:
    scale = batch_size / REFERENCE_BATCH_SIZE
    return [rate * scale for rate in BASE_RATES[optimizer]]


def fallback_rate(batch_size: int, optimizer: str = "sgd") -> float:
    return FALLBACK_BASE_RATES[optimizer] * batch_size / REFERENCE_BATCH_SIZE


def make_optimizer(
    name: str, parameters: Iterable[nn.Parameter], *, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The resolved optimizer at rate 0 (the schedule sets each step's rate). AdamW's weight
    decay is decoupled (times the rate), so the same small `weight_decay` pulls far less."""
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=0.0, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=0.0, momentum=momentum, weight_decay=weight_decay)
