"""The zoo benchmark's models: the run sizes and the five architectures, each behind a
fixed input normalization, built without any download for `builtin:digits32`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from core.robust.models.architectures import build_architecture

IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


@dataclass(frozen=True)
class Size:
    """How much of everything a run uses."""

    train_images: int | None  # None: all training images left after the validation holdout
    test_images: int  # evaluated (clean and PGD-20): a fixed, seeded subset of the test split
    pretrain_epochs: int
    harden_epochs: int
    train_attack_steps: int


DEFAULT_SIZE = Size(
    train_images=None, test_images=360, pretrain_epochs=30, harden_epochs=3, train_attack_steps=5
)
SIZES = {
    "quick": Size(
        train_images=256, test_images=100, pretrain_epochs=3, harden_epochs=1, train_attack_steps=2
    ),
    "default": DEFAULT_SIZE,
    # The default's data and pretraining, hardened longer and with a stronger training attack.
    "large": replace(DEFAULT_SIZE, harden_epochs=10, train_attack_steps=10),
}
QUICK_ARCHS = ("resnet18", "convnext_atto")  # one BatchNorm, one LayerNorm


class Normalized(nn.Module):
    """(x - mean) / std per channel, then the network: the attack stays in [0,1] pixels."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", mean.view(1, -1, 1, 1).clone())
        self.register_buffer("std", std.view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network((x - self.mean) / self.std)


def _small_vit() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=32,
        patch_size=8,
        num_classes=NUM_CLASSES,
        embed_dim=96,
        depth=4,
        num_heads=3,
        mlp_ratio=2.0,
        global_pool="avg",
        class_token=False,
    )


@dataclass(frozen=True)
class Architecture:
    family: str
    build: Callable[[], nn.Module]
    clean_lr: float  # train_clean's peak rate: what trains this family well from scratch
    clean_optimizer: str = "sgd"
    clean_weight_decay: float = 5e-4
    pretrain_epochs_factor: int = 1  # a ViT learns slower from scratch than a CNN


def _named(name: str) -> Callable[[], nn.Module]:
    return functools.partial(
        build_architecture, name, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES
    )


ARCHITECTURES = {
    "resnet18": Architecture(
        "BatchNorm ResNet (torchvision)", _named("torchvision:resnet18"), 0.05
    ),
    "mobilenet_v3_small": Architecture(
        "MobileNetV3 (torchvision)", _named("torchvision:mobilenet_v3_small"), 0.05
    ),
    "regnetx_002": Architecture("RegNetX (timm)", _named("timm:regnetx_002"), 0.05),
    "convnext_atto": Architecture(
        "LayerNorm ConvNeXt (timm)",
        _named("timm:convnext_atto"),
        2e-3,
        clean_optimizer="adamw",
        clean_weight_decay=0.05,
    ),
    "vit_p8": Architecture(
        "ViT, 8x8 patches (timm)",
        _small_vit,
        2e-3,
        clean_optimizer="adamw",
        clean_weight_decay=0.05,
        pretrain_epochs_factor=10,
    ),
}
