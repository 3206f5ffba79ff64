"""The zoo benchmark's runs: the data and threat, the clean-trained models (cached), and
each one hardened with the defaults and with every fixed peak rate."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from benchmarks.common import RESULTS_DIR, log, pgd20_accuracies
from benchmarks.zoo_models import ARCHITECTURES, Normalized, Size
from core.robust.datasets.augment import random_crop_flip
from core.robust.datasets.loading import DatasetSplits, ImageDataset, load_digits32, with_validation
from core.robust.finetune import FinetuneConfig, FinetuneResult, adversarial_finetune
from core.robust.optimizers import candidate_rates, resolve_optimizer
from core.robust.pretrain import train_clean
from core.robust.threat import ThreatModel

EPSILON = 8 / 255
VALIDATION_FRACTION = 0.1
VALIDATION_SPLIT_SEED = 1234  # fixed: the same validation images for every seed
PRETRAIN_BATCH_SIZE = 64
# The fixed rates: the probe's own grid at the default batch size, for the optimizer the
# defaults fine-tune the model with (core.robust.optimizers: SGD, or AdamW for a LayerNorm
# network). The rate the probe picks is always one of them, so the defaults' row can be set
# beside that rate's (and the best one's) on the same seeds.
BATCH_SIZE = FinetuneConfig().batch_size
# Pretrained models and fixed-rate results, kept between runs (a fixed-rate run does not
# depend on the probe); `--fresh` ignores them.
CACHE_DIR = RESULTS_DIR / "zoo-cache"
DEFAULTS = "defaults"


@dataclass(frozen=True)
class Setup:
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    threat: ThreatModel  # the training attack: PGD with the size's steps
    mean: torch.Tensor
    std: torch.Tensor


def make_setup(size: Size) -> Setup:
    splits: DatasetSplits = with_validation(
        load_digits32(), fraction=VALIDATION_FRACTION, seed=VALIDATION_SPLIT_SEED
    )
    assert splits.val is not None
    train = splits.train
    if size.train_images is not None and size.train_images < len(train):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
        train = train.subset(order[: size.train_images].sort().values)
    images = train.tensors()[0]
    return Setup(
        train=train,
        val=splits.val,
        test=splits.test,
        threat=ThreatModel(norm="linf", epsilon=EPSILON, steps=size.train_attack_steps),
        mean=images.mean(dim=(0, 2, 3)),
        std=images.std(dim=(0, 2, 3)),
    )


def evaluate_test(model: nn.Module, setup: Setup, size: Size, device: str) -> tuple[float, float]:
    """(clean accuracy, PGD-20 accuracy) on the fixed test subset."""
    return pgd20_accuracies(
        model,
        setup.test,
        setup.threat,
        max_samples=size.test_images,
        device=device,
        epsilons=[setup.threat.epsilon],  # no accuracy-by-epsilon curve: only the threat's
    )


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return repr(value)


def _probe_record(result: FinetuneResult) -> dict[str, Any] | None:
    """The probe's whole LrProbe (rates, scores, reference, choice, cost), or None."""
    return _plain(result.lr_probe) if result.lr_probe is not None else None


def harden(
    pretrained: nn.Module,
    setup: Setup,
    size: Size,
    *,
    label: str,
    peak_lr: float | None,
    epochs: int,
    seed: int,
    device: str,
) -> dict[str, Any]:
    """One adversarial fine-tuning of the pretrained model, evaluated on test."""
    config = FinetuneConfig(epochs=epochs, seed=seed, peak_lr=peak_lr)
    started = time.perf_counter()
    result = adversarial_finetune(
        pretrained, setup.train, setup.threat, config, val=setup.val, device=device
    )
    seconds = time.perf_counter() - started
    clean, robust = evaluate_test(result.model, setup, size, device)
    probe = _probe_record(result)
    used_lr = result.peak_lr
    return {
        "label": label,
        "seed": seed,
        "clean": clean,
        "robust": robust,
        "peak_lr": used_lr if used_lr is not None else peak_lr,
        "lr_probe": probe,
        "probe_seconds": probe["seconds"] if probe is not None else None,
        "harden_seconds": seconds,
        "best_epoch": result.best_epoch,
        "best_meets_clean_constraint": result.best_meets_clean_constraint,
        # The mix with the starting weights handed back when no epoch kept clean accuracy.
        "interpolation": _plain(result.interpolation) if result.interpolation else None,
        "val_clean_by_epoch": [m.val_clean_accuracy for m in result.history],
        "val_robust_by_epoch": [m.val_robust_accuracy for m in result.history],
    }


def run_architecture(
    name: str,
    setup: Setup,
    size: Size,
    *,
    seeds: Sequence[int],
    epochs: int,
    rates: Sequence[float] | None,
    with_defaults: bool,
    device: str,
    use_cache: bool,
) -> dict[str, Any]:
    """Pretrain one model per seed, harden it with the defaults and every fixed rate (the
    given ones, else the probe's grid for the model's optimizer)."""
    spec = ARCHITECTURES[name]
    optimizer = resolve_optimizer("auto", spec.build())
    rates = list(rates) if rates else candidate_rates(BATCH_SIZE, optimizer)
    pretrained_runs: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {DEFAULTS: []} if with_defaults else {}
    runs |= {f"{rate:g}": [] for rate in rates}
    for seed in seeds:
        model, pretrain_seconds = pretrained_model(name, setup, size, seed=seed, device=device)
        clean, robust = evaluate_test(model, setup, size, device)
        pretrained_runs.append(
            {"seed": seed, "clean": clean, "robust": robust, "seconds": pretrain_seconds}
        )
        log(
            f"{name} seed {seed}: pretrained in {pretrain_seconds:.0f} s: clean {clean:.3f} "
            f"PGD-20 {robust:.3f}"
        )
        plan: list[tuple[str, float | None]] = [(DEFAULTS, None)] if with_defaults else []
        plan += [(f"{rate:g}", rate) for rate in rates]
        for label, peak_lr in plan:
            cached = (
                CACHE_DIR
                / f"{name}-seed{seed}-{size_tag(size)}-e{epochs}-{optimizer}-lr{label}-wi.json"
            )
            if peak_lr is not None and use_cache and cached.exists():
                record = json.loads(cached.read_text())
            else:
                record = harden(
                    model,
                    setup,
                    size,
                    label=label,
                    peak_lr=peak_lr,
                    epochs=epochs,
                    seed=seed,
                    device=device,
                )
                if peak_lr is not None:
                    cached.write_text(json.dumps(record))
            runs[label].append(record)
            log(
                f"{name} seed {seed}: {label} (lr {record['peak_lr']}): clean "
                f"{record['clean']:.3f} PGD-20 {record['robust']:.3f} in "
                f"{record['harden_seconds']:.0f} s, best epoch {record['best_epoch']}"
            )
    return {
        "family": spec.family,
        "clean_lr": spec.clean_lr,
        "optimizer": optimizer,
        "rates": rates,
        "pretrained": pretrained_runs,
        "runs": runs,
    }


def size_tag(size: Size) -> str:
    return (
        f"n{size.train_images or 'all'}-p{size.pretrain_epochs}-k{size.train_attack_steps}"
        f"-t{size.test_images}"
    )


def pretrained_model(
    name: str, setup: Setup, size: Size, *, seed: int, device: str
) -> tuple[nn.Module, float]:
    """The clean-trained model of (name, seed) and the seconds its training took: trained
    here, or read back (weights only) from the cache of an earlier run."""
    spec = ARCHITECTURES[name]
    torch.manual_seed(seed)
    model: nn.Module = Normalized(spec.build(), setup.mean, setup.std)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cached = CACHE_DIR / f"{name}-seed{seed}-{size_tag(size)}.pt"
    if cached.exists():
        saved = torch.load(cached, weights_only=True)
        model.load_state_dict(saved["weights"])
        return model.to(device).eval(), float(saved["seconds"])
    started = time.perf_counter()
    model = train_clean(
        model,
        setup.train,
        epochs=size.pretrain_epochs * spec.pretrain_epochs_factor,
        batch_size=PRETRAIN_BATCH_SIZE,
        lr=spec.clean_lr,
        weight_decay=spec.clean_weight_decay,
        optimizer=spec.clean_optimizer,
        seed=seed,
        device=device,
        augment=random_crop_flip,
    )
    seconds = time.perf_counter() - started
    weights = {key: value.cpu() for key, value in model.state_dict().items()}
    torch.save({"weights": weights, "seconds": torch.tensor(seconds)}, cached)
    return model, seconds
