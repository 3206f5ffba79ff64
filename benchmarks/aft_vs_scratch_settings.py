"""The settings benchmarks/aft_vs_scratch.py compares AFT with scratch PGD-AT in: the data, the
threat, the architecture, the clean pretraining, the three recipes and their evaluation.

- digits: the 8x8 digits CNN at Linf 0.2 (benchmarks/common.py), on the CPU.
- digits32_resnet18: torchvision's resnet18 (benchmarks/zoo_models.py's, behind the fixed input
  normalization) on builtin:digits32 at Linf 8/255, reduced on the CPU, full on a GPU.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from benchmarks.common import (
    Pretrained,
    digits_setup,
    evaluate_digits,
    fresh_digits_cnn,
    pretrained_digits_cnn,
)
from benchmarks.zoo_models import ARCHITECTURES, Normalized, Size
from benchmarks.zoo_runs import PRETRAIN_BATCH_SIZE, evaluate_test, make_setup
from core.robust.datasets.augment import random_crop_flip
from core.robust.datasets.loading import ImageDataset
from core.robust.finetune import FinetuneConfig
from core.robust.pretrain import train_clean
from core.robust.threat import ThreatModel

AFT = "AFT"
AFT_LONG = "AFT, long"
SCRATCH = "Scratch PGD-AT"
SETTINGS = ("digits", "digits32_resnet18")
# resnet18's peak rate for AFT on digits32: the one the zoo benchmark's probe chose for it
# (seed 0, README); fixed, so the AFT runs spend nothing on a probe.
RESNET18_AFT_LR = 0.02
# The digits CNN's: FinetuneConfig's default before the probe was, the rate of the README's
# digits table (kept fixed so `make bench` repeats that run).
DIGITS_AFT_LR = 0.2


@dataclass(frozen=True)
class Setting:
    name: str
    results_name: str  # benchmarks/results/<results_name>.json
    train: ImageDataset
    val: ImageDataset
    threat: ThreatModel  # the training attack
    device: str
    configs: dict[str, FinetuneConfig]  # by method name; SCRATCH starts from a fresh net
    fresh: Callable[[int], nn.Module]  # the untrained network of a seed
    pretrain: Callable[[int], Pretrained]  # the clean-trained network of a seed, and its cost
    evaluate: Callable[[nn.Module], tuple[float, float]]  # (test clean, test PGD-20)
    description: dict[str, Any]  # the results file's "setup"


def make_setting(
    name: str, *, quick: bool, device: str, aft_peak_lr: float | None = None
) -> Setting:
    if name == "digits":
        if device != "cpu":
            raise SystemExit("the digits setting runs on the CPU only (benchmarks/common.py)")
        return _digits(quick, aft_peak_lr)
    if name == "digits32_resnet18":
        return _digits32_resnet18(quick, device, aft_peak_lr)
    raise SystemExit(f"--setting must be one of {', '.join(SETTINGS)}, got {name!r}")


def _suffix(quick: bool) -> str:
    return "_quick" if quick else ""  # a --quick run never overwrites the real results


def _digits(quick: bool, aft_peak_lr: float | None) -> Setting:
    setup = digits_setup()
    short, long = (4, 8) if quick else (10, 30)
    aft_lr = aft_peak_lr if aft_peak_lr is not None else DIGITS_AFT_LR
    configs = {
        AFT: FinetuneConfig(epochs=short, peak_lr=aft_lr),
        AFT_LONG: FinetuneConfig(epochs=long, peak_lr=aft_lr),
        SCRATCH: FinetuneConfig(
            epochs=long, schedule="piecewise", peak_lr=0.1, epsilon_rampup_fraction=0.2
        ),
    }
    results_name = "aft_vs_scratch" + (f"_lr{aft_peak_lr:g}" if aft_peak_lr is not None else "")
    return Setting(
        name="digits",
        results_name=results_name + _suffix(quick),
        train=setup.train,
        val=setup.val,
        threat=setup.threat,
        device="cpu",
        configs=configs,
        fresh=fresh_digits_cnn,
        pretrain=pretrained_digits_cnn,
        evaluate=evaluate_digits,
        description={
            "data": "builtin:digits, 1237 train / 200 val (held out from train) / 360 test",
            "threat": "linf eps 0.2; train PGD-7 (step 2.5*eps/7, random start); val PGD-10; "
            "test PGD-20, 1 restart",
            "architecture": "builtin:digits_cnn",
            "augmentation": "none in every phase",
        },
    )


@dataclass(frozen=True)
class Digits32Size:
    """How much a digits32 run uses: `data` as the zoo benchmark sizes its runs."""

    data: Size  # train images, test images, pretraining epochs, training attack steps
    aft_epochs: int
    scratch_epochs: int  # also AFT, long's, when with_long
    with_long: bool  # run AFT, long (the scratch budget) too
    val_images: int  # of the 144 held out: best-epoch choice, PGD-10


DIGITS32_SIZES = {
    "quick": Digits32Size(
        Size(
            train_images=128,
            test_images=50,
            pretrain_epochs=2,
            harden_epochs=0,
            train_attack_steps=2,
        ),
        aft_epochs=2,
        scratch_epochs=3,
        with_long=False,
        val_images=50,
    ),
    # Sized from one measured epoch (README) so that 2 seeds take at most about 20 minutes on
    # this shared 2-core machine, with 1 thread (2 threads beside other work ran 5x slower).
    "cpu": Digits32Size(
        Size(
            train_images=512,
            test_images=200,
            pretrain_epochs=15,
            harden_epochs=0,
            train_attack_steps=3,
        ),
        aft_epochs=4,
        scratch_epochs=12,
        with_long=False,
        val_images=100,
    ),
    # Every training image, the usual PGD-7, 3x the epochs: for one GPU (README's estimate).
    "full": Digits32Size(
        Size(
            train_images=None,
            test_images=360,
            pretrain_epochs=30,
            harden_epochs=0,
            train_attack_steps=7,
        ),
        aft_epochs=10,
        scratch_epochs=30,
        with_long=True,
        val_images=144,
    ),
}


def _digits32_resnet18(quick: bool, device: str, aft_peak_lr: float | None) -> Setting:
    size_name = "quick" if quick else ("cpu" if device == "cpu" else "full")
    size = DIGITS32_SIZES[size_name]
    setup = make_setup(size.data)
    spec = ARCHITECTURES["resnet18"]
    aft_lr = aft_peak_lr if aft_peak_lr is not None else RESNET18_AFT_LR
    configs = {
        AFT: FinetuneConfig(epochs=size.aft_epochs, peak_lr=aft_lr, val_max_samples=size.val_images)
    }
    if size.with_long:
        configs[AFT_LONG] = replace(configs[AFT], epochs=size.scratch_epochs)
    configs[SCRATCH] = FinetuneConfig(
        epochs=size.scratch_epochs,
        schedule="piecewise",
        peak_lr=0.1,
        epsilon_rampup_fraction=0.2,
        val_max_samples=size.val_images,
    )

    def fresh(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return Normalized(spec.build(), setup.mean, setup.std)

    # Digits must not be mirrored: the zoo's crop (4-pixel zero padding) without its flip.
    crop_only = functools.partial(random_crop_flip, flip=False)

    def pretrain(seed: int) -> Pretrained:
        started = time.perf_counter()
        model = train_clean(
            fresh(seed),
            setup.train,
            epochs=size.data.pretrain_epochs,
            batch_size=PRETRAIN_BATCH_SIZE,
            lr=spec.clean_lr,
            weight_decay=spec.clean_weight_decay,
            optimizer=spec.clean_optimizer,
            seed=seed,
            device=device,
            augment=crop_only,
        )
        return Pretrained(
            model=model,
            seconds=time.perf_counter() - started,
            image_passes=size.data.pretrain_epochs * len(setup.train),
            epochs=size.data.pretrain_epochs,
        )

    def evaluate(model: nn.Module) -> tuple[float, float]:
        return evaluate_test(model, setup, size.data, device)

    results_name = "aft_vs_scratch_digits32_resnet18" + ("_full" if size_name == "full" else "")
    if aft_peak_lr is not None:
        results_name += f"_lr{aft_peak_lr:g}"
    return Setting(
        name="digits32_resnet18",
        results_name=results_name + _suffix(quick),
        train=setup.train,
        val=setup.val,  # FinetuneConfig.val_max_samples: a seeded subset of it
        threat=setup.threat,
        device=device,
        configs=configs,
        fresh=fresh,
        pretrain=pretrain,
        evaluate=evaluate,
        description={
            "data": f"builtin:digits32 (3x32x32), {len(setup.train)} train (a seeded subset of "
            f"the 1293 left after a 10% validation holdout, split seed 1234) / "
            f"{size.val_images} of the 144 val / {size.data.test_images} test (fixed, seeded "
            "subsets)",
            "size": size_name,
            "threat": f"linf eps 8/255; train PGD-{size.data.train_attack_steps} (step "
            f"2.5*eps/steps, random start); val PGD-10; test PGD-20, 1 restart",
            "architecture": "torchvision:resnet18 (num_classes 10) behind a fixed per-channel "
            "input normalization (benchmarks/zoo_models.py)",
            "pretraining": f"train_clean, {size.data.pretrain_epochs} epochs, batch "
            f"{PRETRAIN_BATCH_SIZE}, SGD lr {spec.clean_lr}, cosine",
            "augmentation": "pretraining: random crop (4-pixel zero padding), no flip (digits); "
            "AFT and scratch PGD-AT: none (FinetuneConfig offers no flip-free crop)",
        },
    )
