"""Are the fine-tuning defaults good on a zoo of architectures, not just on the digits CNN?

Five families, each built without any download, on `builtin:digits32` (the bundled digits as
3x32x32 colour images, 10 classes, made by the project itself):
- resnet18: torchvision's BatchNorm ResNet-18;
- mobilenet_v3_small: torchvision's MobileNetV3 (BatchNorm, depthwise, squeeze-excite);
- regnetx_002: timm's RegNetX-200MF (BatchNorm, grouped convolutions);
- convnext_atto: timm's ConvNeXt-atto (LayerNorm, 7x7 depthwise, GELU);
- vit_p8: a small timm VisionTransformer (32x32 input, 8x8 patches, width 96, depth 4,
  3 heads, mean-pooled tokens, no class token), clean-trained as ViTs are, with AdamW and
  for 10x the epochs (with SGD, or with 4x4 patches, it stays near 20-60% clean here).
Every model sees its input through a fixed per-channel normalization (digits32's training mean
and std), as users' models usually do; the attacks work in [0,1] pixel space outside it.

Per (architecture, seed): clean training with train_clean (cosine, batch 64; SGD with momentum
0.9, or AdamW for ConvNeXt and the ViT, as those families are trained; the architecture's
clean rate) and the usual random crop (4-pixel zero padding) and horizontal
flip; then that same pretrained model is hardened once with the *defaults* (FinetuneConfig with
only `epochs`, `seed` and `peak_lr=None` set: the engine picks the peak rate with a short probe)
and once per *fixed* peak rate of the grid (the defaults otherwise), so every comparison is
paired. The grid is the probe's own for the optimizer the defaults fine-tune the model with
(core.robust.optimizers: SGD for the BatchNorm networks, AdamW for ConvNeXt and the ViT).
Data: digits32's training images minus a fixed, seeded 10% validation holdout
(`with_validation`, split seed 1234: the best-epoch choice), optionally a seeded subset of the
rest; every reported accuracy is on the test split. Threat: Linf 8/255, training attack PGD
with the size's steps (5 by default: CPU budget), evaluation PGD-20 (one restart, seed 0).

The best fixed rate per model: the highest mean PGD-20 among the rates whose mean clean
accuracy is at most 3 points below the pretrained model's, else the highest mean clean
accuracy. The goals (issue 8, item 7): on every model, the defaults keep mean clean accuracy
within 3 points of the pretrained model's and reach mean PGD-20 within 2 points of the best
fixed rate's. A benchmark, not a test: it always exits 0, and says in its last lines whether
the goals were met.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from benchmarks.common import (
    EVAL_ATTACK_STEPS,
    RESULTS_DIR,
    base_parser,
    fmt_num,
    fmt_pct,
    log,
    markdown_table,
    mean_and_spread,
    pgd20_accuracies,
    set_threads,
    summary,
    write_results,
)
from core.robust.datasets.augment import random_crop_flip
from core.robust.datasets.loading import DatasetSplits, ImageDataset, load_digits32, with_validation
from core.robust.finetune import FinetuneConfig, FinetuneResult, adversarial_finetune
from core.robust.models.architectures import build_architecture
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
MAX_CLEAN_LOSS = 0.03  # the defaults' clean accuracy: at most 3 points below the pretrained
MAX_ROBUST_GAP = 0.02  # the defaults' PGD-20: at most 2 points below the best fixed rate's
DEFAULTS = "defaults"
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


def _mean(runs: Sequence[dict[str, Any]], key: str) -> float:
    return mean_and_spread([r[key] for r in runs])[0]


def best_fixed_rate(result: dict[str, Any]) -> str | None:
    """The rate with the highest mean PGD-20 among those within 3 clean points of the
    pretrained model; else the one with the highest mean clean accuracy."""
    labels = [f"{rate:g}" for rate in result["rates"]]
    if not labels:
        return None
    pre_clean = _mean(result["pretrained"], "clean")
    runs = result["runs"]
    eligible = [
        label
        for label in labels
        if _mean(runs[label], "clean") >= pre_clean - MAX_CLEAN_LOSS - 1e-9
    ]
    if eligible:
        return max(eligible, key=lambda label: _mean(runs[label], "robust"))
    return max(labels, key=lambda label: _mean(runs[label], "clean"))


def judge(result: dict[str, Any], best: str | None) -> dict[str, bool | None]:
    """The two goals for one architecture (None: not measured)."""
    runs = result["runs"]
    if DEFAULTS not in runs:
        return {"clean_within_3": None, "robust_within_2_of_best": None}
    pre_clean = _mean(result["pretrained"], "clean")
    clean_ok = _mean(runs[DEFAULTS], "clean") >= pre_clean - MAX_CLEAN_LOSS - 1e-9
    robust_ok = None
    if best is not None:
        robust_ok = (
            _mean(runs[DEFAULTS], "robust") >= _mean(runs[best], "robust") - MAX_ROBUST_GAP - 1e-9
        )
    return {"clean_within_3": clean_ok, "robust_within_2_of_best": robust_ok}


def _verdict(value: bool | None) -> str:
    return "—" if value is None else ("pass" if value else "FAIL")


def _lrs(runs: Sequence[dict[str, Any]]) -> str:
    values = [r["peak_lr"] for r in runs if r["peak_lr"] is not None]
    if not values:
        return "—"
    return ", ".join(f"{v:.3g}" for v in values)


def _clean_and_robust(runs: Sequence[dict[str, Any]]) -> str:
    return f"{100 * _mean(runs, 'clean'):.1f} / {100 * _mean(runs, 'robust'):.1f}"


def tables(results: dict[str, dict[str, Any]]) -> list[str]:
    main_rows, rate_rows, time_rows = [], [], []
    grid_size = max(len(result["rates"]) for result in results.values())
    for name, result in results.items():
        runs, pre = result["runs"], result["pretrained"]
        best = result["best_fixed_rate"]
        checks = result["checks"]
        defaults = runs.get(DEFAULTS)
        main_rows.append(
            [
                name,
                result["optimizer"],
                fmt_pct([r["clean"] for r in pre]),
                fmt_pct([r["robust"] for r in pre]),
                fmt_pct([r["clean"] for r in defaults]) if defaults else "—",
                fmt_pct([r["robust"] for r in defaults]) if defaults else "—",
                _lrs(defaults) if defaults else "—",
                best or "—",
                fmt_pct([r["clean"] for r in runs[best]]) if best else "—",
                fmt_pct([r["robust"] for r in runs[best]]) if best else "—",
                _verdict(checks["clean_within_3"]),
                _verdict(checks["robust_within_2_of_best"]),
            ]
        )
        rate_rows.append(
            [f"{name} ({result['optimizer']})", _clean_and_robust(pre)]
            + ([_clean_and_robust(defaults)] if defaults else [])
            + [
                f"{label}: {_clean_and_robust(runs[label])}" + (" *" if label == best else "")
                for label in (f"{r:g}" for r in result["rates"])
            ]
        )
        fixed = [r for label, rs in runs.items() if label != DEFAULTS for r in rs]
        probes = [r["probe_seconds"] for r in defaults or [] if r["probe_seconds"] is not None]
        time_rows.append(
            [
                name,
                fmt_num([r["seconds"] for r in pre]),
                fmt_num([r["harden_seconds"] for r in defaults]) if defaults else "—",
                fmt_num(probes) if probes else "—",
                fmt_num([r["harden_seconds"] for r in fixed]) if fixed else "—",
            ]
        )
    main = markdown_table(
        [
            "model",
            "optimizer",
            "clean before %",
            "PGD-20 before %",
            "defaults clean %",
            "defaults PGD-20 %",
            "defaults' peak lr (per seed)",
            "best fixed lr",
            "best fixed clean %",
            "best fixed PGD-20 %",
            "clean within 3",
            "robust within 2 of best fixed",
        ],
        main_rows,
    )
    by_rate = markdown_table(
        [
            "model (mean clean / PGD-20 %)",
            "pretrained",
            *([DEFAULTS] if any(DEFAULTS in r["runs"] for r in results.values()) else []),
            *(f"rate {index + 1} of the grid" for index in range(grid_size)),
        ],
        rate_rows,
    )
    timing = markdown_table(
        [
            "model",
            "clean training s",
            "hardening s, defaults (probe included)",
            "probe s",
            "hardening s, per fixed rate",
        ],
        time_rows,
    )
    return [main, by_rate + "\n\n(* the best fixed rate)", timing]


def parse_args() -> argparse.Namespace:
    parser = base_parser(__doc__ or "", seeds=2)
    parser.add_argument(
        "--archs",
        default=None,
        help=f"comma-separated, from {', '.join(ARCHITECTURES)} (default: all; --quick: "
        f"{', '.join(QUICK_ARCHS)})",
    )
    parser.add_argument(
        "--size",
        choices=("default", "large"),
        default="default",
        help="default: a CPU run of about 35 minutes; large: more epochs and attack steps, "
        "for a GPU (--quick overrides it)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="hardening epochs (size's)")
    parser.add_argument(
        "--pretrain-epochs", type=int, default=None, help="clean training epochs (size's)"
    )
    parser.add_argument(
        "--rates",
        default="",
        help="comma-separated fixed peak rates for every model (default: the probe's grid for "
        "each model's optimizer, core.robust.optimizers)",
    )
    parser.add_argument(
        "--no-defaults",
        action="store_true",
        help="skip the defaults row (peak_lr=None: the automatic rate), only the fixed grid",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help=f"ignore the fixed-rate results kept in {CACHE_DIR.name}/ (pretrained models "
        "are always reused: delete the folder to retrain them)",
    )
    args = parser.parse_args()
    names = (
        args.archs.split(",") if args.archs else list(QUICK_ARCHS if args.quick else ARCHITECTURES)
    )
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        parser.error(f"unknown --archs {', '.join(unknown)}; use {', '.join(ARCHITECTURES)}")
    args.arch_names = names
    try:
        args.rate_values = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rates must be comma-separated numbers, got {args.rates!r}")
    return args


def main() -> None:
    args = parse_args()
    set_threads(args.threads)
    started = time.perf_counter()
    size_name = "quick" if args.quick else args.size
    size = SIZES[size_name]
    if args.pretrain_epochs is not None:
        size = dataclasses.replace(size, pretrain_epochs=args.pretrain_epochs)
    epochs = args.epochs if args.epochs is not None else size.harden_epochs
    seed_count = 1 if args.quick and args.seeds == 2 else args.seeds
    seeds = list(range(seed_count))
    setup = make_setup(size)
    log(
        f"zoo ({size_name}): {len(setup.train)} train / {len(setup.val)} val / "
        f"{min(size.test_images, len(setup.test))} test images; {len(args.arch_names)} archs x "
        f"{seed_count} seeds x ({'defaults + ' if not args.no_defaults else ''}"
        f"{len(args.rate_values) or 'the grid of'} rates); {epochs} hardening epochs, PGD-"
        f"{size.train_attack_steps} training attack"
    )

    results: dict[str, dict[str, Any]] = {}
    for name in args.arch_names:
        result = run_architecture(
            name,
            setup,
            size,
            seeds=seeds,
            epochs=epochs,
            rates=args.rate_values,
            with_defaults=not args.no_defaults,
            device=args.device,
            use_cache=not args.fresh,
        )
        result["best_fixed_rate"] = best_fixed_rate(result)
        result["checks"] = judge(result, result["best_fixed_rate"])
        results[name] = result

    payload: dict[str, Any] = {
        "setup": {
            "data": f"builtin:digits32, {len(setup.train)} train / {len(setup.val)} val "
            f"(held out from train, seed {VALIDATION_SPLIT_SEED}) / "
            f"{min(size.test_images, len(setup.test))} test",
            "size": size_name,
            "sizes": asdict(size),
            "threat": f"linf eps 8/255; train PGD-{size.train_attack_steps}; val PGD-"
            f"{FinetuneConfig().val_attack_steps}; test PGD-{EVAL_ATTACK_STEPS}, 1 restart",
            "pretraining": f"train_clean, {size.pretrain_epochs} epochs, batch "
            f"{PRETRAIN_BATCH_SIZE}, random crop (pad 4) + flip, input normalization",
            "hardening_epochs": epochs,
            "rates": args.rate_values or "the probe's grid for each model's optimizer",
            "defaults": None if args.no_defaults else "FinetuneConfig(epochs, seed, peak_lr=None)",
            "goals": "defaults: mean clean >= pretrained - 3 pts; mean PGD-20 >= best fixed "
            "rate's - 2 pts (best: max mean PGD-20 among rates within 3 clean pts, else max "
            "clean)",
        },
        "architectures": {
            name: result
            | {
                "summary": {
                    "pretrained_clean": summary([r["clean"] for r in result["pretrained"]]),
                    "pretrained_pgd20": summary([r["robust"] for r in result["pretrained"]]),
                    **{
                        label: {
                            "clean": summary([r["clean"] for r in runs]),
                            "pgd20": summary([r["robust"] for r in runs]),
                        }
                        for label, runs in result["runs"].items()
                    },
                }
            }
            for name, result in results.items()
        },
    }
    outcome = [r["checks"] for r in results.values()]
    met = (
        None
        if args.no_defaults
        else all(c["clean_within_3"] and c["robust_within_2_of_best"] for c in outcome)
    )
    payload["defaults_met_both_goals_on_every_model"] = met
    write_results("zoo", payload, tables=tables(results), started=started, args=args)
    print()
    if met is None:
        print("SUMMARY: defaults not run (--no-defaults); fixed-rate grid only.")
    elif met:
        print(
            f"SUMMARY: the defaults met both goals on all {len(results)} models (clean within "
            "3 points of pretrained, PGD-20 within 2 points of the best fixed rate)."
        )
    else:
        failed = [
            name
            for name, r in results.items()
            if not (r["checks"]["clean_within_3"] and r["checks"]["robust_within_2_of_best"])
        ]
        print(
            f"SUMMARY: the defaults did NOT meet both goals on every model: failed on "
            f"{', '.join(failed)} ({len(failed)} of {len(results)})."
        )


if __name__ == "__main__":
    main()
