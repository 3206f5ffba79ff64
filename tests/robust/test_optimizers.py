"""The optimizer each family is fine-tuned with: AdamW for LayerNorm networks, SGD otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.robust.errors import InvalidConfig
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.models.architectures import build_architecture
from core.robust.optimizers import candidate_rates, make_optimizer, resolve_optimizer
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=0.2, steps=2)


def tiny_layer_norm_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LayerNorm(32), nn.GELU(),
                         nn.Linear(32, 10))  # fmt: skip


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("torchvision:resnet18", "sgd"),  # BatchNorm
        ("torchvision:mobilenet_v3_small", "sgd"),
        ("timm:convnext_atto", "adamw"),  # LayerNorm2d, a subclass of nn.LayerNorm
        ("timm:vit_tiny_patch16_224", "adamw"),
        ("builtin:digits_cnn", "sgd"),  # neither: the schedule was chosen on it with SGD
    ],
)
def test_auto_takes_the_optimizer_of_the_family(name: str, expected: str) -> None:
    shape = (1, 8, 8) if name.startswith("builtin") else (3, 32, 32)
    model = build_architecture(name, input_shape=shape, num_classes=10)
    assert resolve_optimizer("auto", model) == expected


def test_a_named_optimizer_is_kept_whatever_the_model() -> None:
    assert resolve_optimizer("sgd", tiny_layer_norm_net()) == "sgd"
    assert resolve_optimizer("adamw", nn.Sequential(nn.BatchNorm1d(4))) == "adamw"


def test_each_optimizer_has_its_own_grid_about_100x_apart() -> None:
    sgd, adamw = candidate_rates(128, "sgd"), candidate_rates(128, "adamw")
    assert len(sgd) == len(adamw)
    assert 50 <= sgd[0] / adamw[0] <= 200
    built = make_optimizer("adamw", tiny_layer_norm_net().parameters(), momentum=0.9,
                           weight_decay=5e-4)  # fmt: skip
    assert isinstance(built, torch.optim.AdamW)


def test_an_unknown_optimizer_is_refused_by_name() -> None:
    with pytest.raises(InvalidConfig, match="optimizer must be one of auto, sgd, adamw"):
        FinetuneConfig(optimizer="lamb")


def test_a_run_says_which_optimizer_it_used_and_the_probe_tried_its_grid(digits) -> None:
    torch.manual_seed(0)
    result = adversarial_finetune(
        tiny_layer_norm_net(), digits.train, THREAT, FinetuneConfig(epochs=1, batch_size=64),
        val=digits.test, device="cpu",
    )  # fmt: skip
    assert result.optimizer == "adamw"
    assert result.lr_probe is not None
    assert [trial.lr for trial in result.lr_probe.trials] == pytest.approx(
        candidate_rates(64, "adamw")
    )
    fixed = adversarial_finetune(
        tiny_layer_norm_net(), digits.train, THREAT,
        FinetuneConfig(epochs=1, batch_size=64, peak_lr=0.05, optimizer="sgd"), device="cpu",
    )  # fmt: skip
    assert fixed.optimizer == "sgd" and fixed.lr_probe is None
