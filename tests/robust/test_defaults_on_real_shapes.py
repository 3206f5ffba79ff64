"""The defaults on real-shape data: a small BatchNorm network on 3x32x32 images, hardened with
nothing but the defaults (the learning rate chosen by the probe), gains robust accuracy under
PGD and keeps its clean accuracy within 3 points (beyond the noise of 360 test images), on test
images the run never chose on."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.robust.datasets.loading import DatasetSplits, load_digits32, with_validation
from core.robust.evaluation import evaluate
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.intervals import Z_95
from core.robust.pretrain import train_clean
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=8 / 255, steps=5)


def small_bn_cnn() -> nn.Module:
    """Four conv + BatchNorm blocks, three of them strided (about 60,000 parameters): a
    ResNet's ingredients at a size a test can train in seconds."""

    def block(inputs: int, outputs: int, stride: int) -> list[nn.Module]:
        return [
            nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
        ]

    return nn.Sequential(
        *block(3, 16, 1), *block(16, 32, 2), *block(32, 64, 2), *block(64, 64, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def digits32() -> DatasetSplits:
    return with_validation(load_digits32(), fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def pretrained_bn_cnn(digits32: DatasetSplits) -> nn.Module:
    torch.manual_seed(0)
    return train_clean(small_bn_cnn(), digits32.train, epochs=15, lr=0.1, device="cpu")


def pgd20(model: nn.Module, data: DatasetSplits) -> tuple[float, float]:
    report = evaluate(
        model, data.test, THREAT, attack_steps=20, max_samples=len(data.test),
        epsilons=[THREAT.epsilon], sanity_checks=False, device="cpu",
    )  # fmt: skip
    return report.clean_accuracy, report.robust_accuracy


def clean_drop_beyond_noise(before: nn.Module, after: nn.Module, data: DatasetSplits) -> float:
    """The lower end of a 95% interval on the test clean accuracy lost: the loss less its
    margin as a paired difference on the same images (McNemar's: only the images whose
    verdict changed carry information)."""
    x, y = data.test.tensors()
    with torch.no_grad():
        right_before = before.eval()(x).argmax(1) == y
        right_after = after.eval()(x).argmax(1) == y
    lost = int((right_before & ~right_after).sum())
    gained = int((~right_before & right_after).sum())
    n = len(y)
    drop = (lost - gained) / n
    spread = math.sqrt(max(lost + gained - (lost - gained) ** 2 / n, 0.0)) / n
    return drop - Z_95 * spread


def test_a_batchnorm_network_on_3x32x32_gains_robustness_with_the_defaults(
    pretrained_bn_cnn: nn.Module, digits32: DatasetSplits
) -> None:
    clean_before, robust_before = pgd20(pretrained_bn_cnn, digits32)
    assert clean_before > 0.8  # a model worth hardening

    config = FinetuneConfig(epochs=3)  # everything else at its default: peak_lr=None
    result = adversarial_finetune(
        pretrained_bn_cnn, digits32.train, THREAT, config, val=digits32.val, device="cpu"
    )

    clean_after, robust_after = pgd20(result.model, digits32)
    assert result.lr_probe is not None and result.lr_probe.trials
    assert robust_after >= robust_before + 0.10, (robust_before, robust_after, result.peak_lr)
    # The engine keeps validation clean accuracy within max_clean_drop (3 points on 144
    # images); the 360 test images measure the same loss with their own noise, and on this
    # network the run lands near the limit (test drops of 3.1 and 3.6 points seen on two
    # machines, 2.1 on validation). So the test images must not show, at 95%, a loss larger
    # than max_clean_drop (on 360 images a run that lost 6 points fails, one that lost 4
    # passes).
    excess = clean_drop_beyond_noise(pretrained_bn_cnn, result.model, digits32)
    assert excess <= config.max_clean_drop, (clean_before, clean_after, excess, result.peak_lr)
