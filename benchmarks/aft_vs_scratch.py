"""AFT vs PGD adversarial training from scratch, in two settings (`--setting`).

digits (the default; benchmarks/common.py): 8x8 digits at Linf 0.2. Per seed, the same
architecture (builtin:digits_cnn) is trained three ways:
- AFT: clean pretraining (train_clean, 15 epochs), then `adversarial_finetune` with the
  default FinetuneConfig (slow start fast decay, 10 epochs) at a fixed peak rate of 0.2 (the
  default before the engine's probe; no probe cost).
- AFT, long: the same with 30 epochs, i.e. the same adversarial budget as scratch AT.
- Scratch AT: `adversarial_finetune` on the *untrained* (randomly initialised) net, 30 epochs,
  the classic piecewise schedule of Madry et al. / Rice et al. (lr 0.1, x0.1 at 50% and 75% of
  the run), epsilon ramped up over the first 20% of the steps (usual on MNIST-like data). In a
  2-seed pilot of 30-epoch recipes (piecewise 0.1, one-cycle 0.05/0.1 with and without the
  ramp-up, cosine 0.1) piecewise 0.1 and cosine 0.1 were the strongest (about 62-64% PGD-20)
  and one-cycle 0.1 a little behind (58-60%): scratch AT gets a well-tuned recipe.
Each run keeps its best epoch by validation PGD-10 accuracy on 200 held-out training images;
accuracies reported are on the 360 test images (clean and PGD-20).

digits32_resnet18 (the paper's shape, 3x32x32; benchmarks/aft_vs_scratch_settings.py):
torchvision's resnet18 (10 classes, behind the zoo's fixed input normalization) on
builtin:digits32 at Linf 8/255, the validation split a seeded 10% holdout of the training
images (`with_validation`). Pretraining: train_clean (SGD, lr 0.05, cosine, batch 64) with a
random crop of the 4-pixel zero-padded image and *no* flip (a mirrored digit is no digit).
AFT (peak rate 0.02) and scratch AT (the digits recipe above) train without augmentation:
FinetuneConfig's "standard" crop always flips. `--device cpu` runs a reduced size (512 train
images, 15 pretraining epochs, PGD-3, AFT 4 epochs, scratch 12, 100 validation and 200 test
images: about 20 minutes for 2 seeds on 2 shared cores); `--device cuda` the full one (every
training image, 30 pretraining epochs, PGD-7, AFT 10 epochs, AFT long and scratch 30, the
whole 144 validation and 360 test images), sized for a few minutes on one GPU (an estimate
from its FLOPs, never run here). `--quick`: a tiny run of either setting that only checks the
code (its results go to a *_quick.json file).

THE RATIO (the paper claims 8-10x): let `target` be the best validation robust accuracy
scratch AT reaches; scratch's cost is its cumulative adversarial passes (and training seconds)
at the first epoch reaching it, AFT's cost is the same at its first epoch reaching `target`
(with and without the clean pretraining added). If AFT never gets there, that is reported.
The converse (scratch's cost to reach AFT's best validation robust accuracy) is reported too;
where scratch never gets there, its whole run's cost over AFT's is given as a lower bound.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from benchmarks.aft_vs_scratch_runs import compare, run_seed
from benchmarks.aft_vs_scratch_settings import AFT, AFT_LONG, SCRATCH, SETTINGS, make_setting
from benchmarks.common import (
    base_parser,
    fmt_num,
    fmt_pct,
    markdown_table,
    mean_and_spread,
    set_threads,
    summary,
    write_results,
)

DEFAULT_SEEDS = {"digits": 5, "digits32_resnet18": 2}


def _ratio_cell(comparison: dict[str, Any], key: str) -> str:
    """The ratio over the seeds where both reach the target; where only the AFT side does,
    the lower bound (scratch's whole run over AFT's cost) is said beside it."""
    values = [e[key] for e in comparison["per_seed"] if key in e]
    bounds = [e[f"at_least_{key}"] for e in comparison["per_seed"] if f"at_least_{key}" in e]
    cells = []
    if len(values) == 1:
        cells.append(f"{values[0]:.2f}x (1 seed)")
    elif values:
        cells.append(f"{fmt_num(values, 2)}x")
    if bounds:
        seeds = "1 seed" if len(bounds) == 1 else f"{len(bounds)} seeds"
        cells.append(f"> {min(bounds):.2f}x (scratch never reached, {seeds})")
    return "; ".join(cells) or "never reached"


def _min_max(values: list[float]) -> str:
    return f"{100 * min(values):.1f}–{100 * max(values):.1f}"


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.add_argument(
        "--setting",
        choices=SETTINGS,
        default="digits",
        help="digits: the 8x8 digits CNN at Linf 0.2; digits32_resnet18: resnet18 on 3x32x32 "
        "digits32 at Linf 8/255 (default digits)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (digits32_resnet18: the reduced run) or cuda (digits32_resnet18 only: the "
        "full run)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="number of seeds, 0..N-1 (default: 5 for digits, 2 for digits32_resnet18; --quick: 1)",
    )
    parser.add_argument(
        "--aft-peak-lr",
        type=float,
        default=None,
        help="the AFT runs' peak rate (default: 0.2 for digits, 0.02 for digits32_resnet18); "
        "a given one goes into the results file's name (_lr<value>)",
    )
    args = parser.parse_args()
    set_threads(args.threads)
    started = time.perf_counter()
    setting = make_setting(
        args.setting, quick=args.quick, device=args.device, aft_peak_lr=args.aft_peak_lr
    )
    seed_count = args.seeds or (1 if args.quick else DEFAULT_SEEDS[args.setting])
    seeds = [run_seed(setting, seed) for seed in range(seed_count)]
    names = list(setting.configs)

    rows = []
    pre_passes = [s["pretrained"].image_passes for s in seeds]
    pre_seconds = [s["pretrained"].seconds for s in seeds]
    rows.append(
        [
            "Clean pretraining only",
            fmt_pct([s["pretrained_test"][0] for s in seeds]),
            fmt_pct([s["pretrained_test"][1] for s in seeds]),
            _min_max([s["pretrained_test"][1] for s in seeds]),
            "—",
            "0",
            "0",
            f"{mean_and_spread(pre_passes)[0] / 1000:.1f}",
            fmt_num(pre_seconds),
            f"{mean_and_spread(pre_passes)[0] / 1000:.1f}",
            fmt_num(pre_seconds),
        ]
    )
    for name in names:
        runs = [s["runs"][name] for s in seeds]
        config = setting.configs[name]
        adv_passes = [r.total_cost[0] for r in runs]
        adv_seconds = [r.total_cost[1] for r in runs]
        is_aft = name != SCRATCH
        total_passes = [
            a + (p if is_aft else 0) for a, p in zip(adv_passes, pre_passes, strict=True)
        ]
        total_seconds = [
            a + (p if is_aft else 0.0) for a, p in zip(adv_seconds, pre_seconds, strict=True)
        ]
        rates = "/".join(sorted({f"{r.peak_lr:g}" for r in runs}))
        chosen = "" if config.peak_lr is not None else " (probe)"
        label = (
            f"{name} ({config.epochs} ep, {config.schedule}, lr {rates}{chosen}, "
            f"ramp {config.epsilon_rampup_fraction:g})"
        )
        rows.append(
            [
                label,
                fmt_pct([r.clean for r in runs]),
                fmt_pct([r.robust for r in runs]),
                _min_max([r.robust for r in runs]),
                fmt_num([r.best_epoch for r in runs]),
                f"{mean_and_spread(adv_passes)[0] / 1000:.1f}",
                fmt_num(adv_seconds),
                f"{mean_and_spread(pre_passes)[0] / 1000:.1f}" if is_aft else "—",
                fmt_num(pre_seconds) if is_aft else "—",
                f"{mean_and_spread(total_passes)[0] / 1000:.1f}",
                fmt_num(total_seconds),
            ]
        )
    table = markdown_table(
        [
            "method",
            "clean %",
            "PGD-20 %",
            "PGD-20 % min–max",
            "best epoch",
            "adv. passes (k img)",
            "adv. train s",
            "pretrain passes (k img)",
            "pretrain s",
            "total passes (k img)",
            "total s",
        ],
        rows,
    )

    pairs = [(AFT, SCRATCH), (AFT_LONG, SCRATCH), (AFT, AFT), (AFT_LONG, AFT_LONG)]
    comparisons = [
        compare(seeds, slow=SCRATCH, fast=fast, target_from=target_from)
        for fast, target_from in pairs
        if fast in setting.configs
    ]
    ratio_rows = []
    for comparison in comparisons:
        per_seed = comparison["per_seed"]
        reached = sum("ratio_passes" in e for e in per_seed)
        ratio_rows.append(
            [
                f"{comparison['fast']} vs scratch, to {comparison['target_from']}'s best val "
                "robust acc.",
                fmt_pct([e["target_val_robust"] for e in per_seed]),
                f"{reached}/{len(per_seed)}",
                _ratio_cell(comparison, "ratio_passes"),
                _ratio_cell(comparison, "ratio_passes_incl_pretrain"),
                _ratio_cell(comparison, "ratio_seconds"),
                _ratio_cell(comparison, "ratio_seconds_incl_pretrain"),
            ]
        )
    ratio_table = markdown_table(
        [
            "scratch cost / AFT cost",
            "target val PGD-10 %",
            "seeds where both reach it",
            "adv. passes",
            "passes incl. pretrain",
            "adv. seconds",
            "seconds incl. pretrain",
        ],
        ratio_rows,
    )
    never = [
        f"seed {e['seed']}: {c['fast'] if e.get('fast_epoch') is None else c['slow']} never "
        f"reached {100 * e['target_val_robust']:.1f}% validation robust accuracy"
        for c in comparisons
        for e in c["per_seed"]
        if "ratio_passes" not in e
    ]

    payload = {
        "setup": {
            "setting": setting.name,
            "device": setting.device,
            **setting.description,
            "compute_unit": "image forward+backward passes (PGD-k epoch = (k+1) x train images)",
            "configs": {name: asdict(c) for name, c in setting.configs.items()},
        },
        "summary": {
            name: {
                "test_clean_accuracy": summary([s["runs"][name].clean for s in seeds]),
                "test_pgd20_accuracy": summary([s["runs"][name].robust for s in seeds]),
                "adversarial_image_passes": summary([s["runs"][name].total_cost[0] for s in seeds]),
                "adversarial_train_seconds": summary(
                    [s["runs"][name].total_cost[1] for s in seeds]
                ),
            }
            for name in names
        }
        | {
            "pretrained": {
                "test_clean_accuracy": summary([s["pretrained_test"][0] for s in seeds]),
                "test_pgd20_accuracy": summary([s["pretrained_test"][1] for s in seeds]),
                "image_passes": summary(pre_passes),
                "seconds": summary(pre_seconds),
            }
        },
        "comparisons": comparisons,
        "seeds": [
            {
                "seed": s["seed"],
                "pretrained": {
                    "test_clean_accuracy": s["pretrained_test"][0],
                    "test_pgd20_accuracy": s["pretrained_test"][1],
                    "image_passes": s["pretrained"].image_passes,
                    "seconds": s["pretrained"].seconds,
                },
                "runs": {name: run.to_json() for name, run in s["runs"].items()},
            }
            for s in seeds
        ],
    }
    write_results(
        setting.results_name, payload, tables=[table, ratio_table], started=started, args=args
    )
    print()
    print("Ratios (scratch-AT cost / AFT cost to reach the same validation robust accuracy):")
    for row in ratio_rows:
        print(
            f"- {row[0]} (target {row[1]}, reached in {row[2]} seeds): adversarial passes "
            f"{row[3]}, incl. pretraining {row[4]}; seconds {row[5]}, incl. pretraining {row[6]}"
        )
    for line in never:
        print(f"  {line}")


if __name__ == "__main__":
    main()
