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
import time
from dataclasses import asdict
from typing import Any

from benchmarks.common import (
    EVAL_ATTACK_STEPS,
    base_parser,
    log,
    set_threads,
    summary,
    write_results,
)
from benchmarks.zoo_models import ARCHITECTURES, QUICK_ARCHS, SIZES
from benchmarks.zoo_runs import (
    CACHE_DIR,
    PRETRAIN_BATCH_SIZE,
    VALIDATION_SPLIT_SEED,
    make_setup,
    run_architecture,
)
from benchmarks.zoo_tables import best_fixed_rate, judge, tables
from core.robust.finetune import FinetuneConfig


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
