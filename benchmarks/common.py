"""Shared helpers for the benchmarks: the digits setup, pretrained models, statistics, output.

The digits setup (every accuracy benchmark uses it):
- data: scikit-learn's 8x8 digits as `load_digits()` splits them (1,437 train / 360 test); a
  fixed 200 of the training images are held out as the *validation* set that picks the best
  epoch, so the test images only ever measure (no selection on the test set). Training,
  pretraining included, uses the remaining 1,237 images.
- threat: Linf, epsilon 0.2 (a clean digits CNN keeps only a few percent under PGD there);
  training attack PGD-7 with the 2.5·eps/steps step rule and a random start.
- evaluation: PGD-20 (one restart, fixed seed) and clean accuracy on all 360 test images.
- architecture: builtin:digits_cnn, initialised from `torch.manual_seed(seed)`.

Compute is counted in *image* forward+backward passes: a PGD-k training epoch costs (k+1)
passes per training image, a clean epoch one. (The engine's `gradient_passes` counts batches;
`image_passes()` converts, so clean pretraining at batch 64 and AFT at batch 128 compare.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.robust.datasets.loading import ImageDataset, load_digits
from core.robust.evaluation import evaluate
from core.robust.finetune import EpochMetrics
from core.robust.models.architectures import build_architecture
from core.robust.pretrain import train_clean
from core.robust.threat import ThreatModel

RESULTS_DIR = Path(__file__).resolve().parent / "results"

ARCHITECTURE = "builtin:digits_cnn"
EPSILON = 0.2
TRAIN_ATTACK_STEPS = 7
EVAL_ATTACK_STEPS = 20
VALIDATION_SIZE = 200
VALIDATION_SPLIT_SEED = 1234  # fixed: the same validation images for every seed
PRETRAIN_EPOCHS = 15  # train_clean's default (batch 64, lr 0.05, cosine)
PRETRAIN_BATCH_SIZE = 64
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class DigitsSetup:
    train: ImageDataset  # 1,237 images: pretraining and adversarial training
    val: ImageDataset  # 200 held-out training images: best-epoch selection
    test: ImageDataset  # 360 images: every reported accuracy
    threat: ThreatModel  # Linf 0.2, PGD-7 (the training attack)
    input_shape: tuple[int, int, int]
    num_classes: int


@cache
def digits_setup() -> DigitsSetup:
    splits = load_digits()
    generator = torch.Generator().manual_seed(VALIDATION_SPLIT_SEED)
    order = torch.randperm(len(splits.train), generator=generator)
    val_indices = order[:VALIDATION_SIZE].sort().values
    train_indices = order[VALIDATION_SIZE:].sort().values
    return DigitsSetup(
        train=splits.train.subset(train_indices),
        val=splits.train.subset(val_indices),
        test=splits.test,
        threat=ThreatModel(norm="linf", epsilon=EPSILON, steps=TRAIN_ATTACK_STEPS),
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
    )


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only settable before the first parallel work; harmless then
        pass


def fresh_digits_cnn(seed: int) -> nn.Module:
    """builtin:digits_cnn with the random initialisation that `seed` fixes."""
    setup = digits_setup()
    torch.manual_seed(seed)
    return build_architecture(
        ARCHITECTURE, input_shape=setup.input_shape, num_classes=setup.num_classes
    )


@dataclass
class Pretrained:
    model: nn.Module
    seconds: float  # wall time of the clean training
    image_passes: int  # forward+backward passes over training images
    epochs: int


def pretrained_digits_cnn(seed: int, *, epochs: int = PRETRAIN_EPOCHS) -> Pretrained:
    """A clean digits CNN (train_clean: SGD+momentum, cosine, batch 64) and what it cost."""
    setup = digits_setup()
    model = fresh_digits_cnn(seed)
    started = time.perf_counter()
    trained = train_clean(
        model,
        setup.train,
        epochs=epochs,
        batch_size=PRETRAIN_BATCH_SIZE,
        seed=seed,
        device="cpu",
    )
    seconds = time.perf_counter() - started
    return Pretrained(
        model=trained, seconds=seconds, image_passes=epochs * len(setup.train), epochs=epochs
    )


def pgd20_accuracies(
    model: nn.Module,
    test: ImageDataset,
    threat: ThreatModel,
    *,
    max_samples: int,
    device: str,
    epsilons: list[float] | None = None,
) -> tuple[float, float]:
    """(clean accuracy, PGD-20 accuracy) on the first `max_samples` of a fixed, seeded order of
    `test`: the figures every benchmark table shows. `epsilons`: the accuracy-by-epsilon curve
    evaluate() also measures (None: its default radii)."""
    report = evaluate(
        model,
        test,
        threat,
        attack="fast",  # PGD-20 alone: the figure the README's tables have always shown
        attack_steps=EVAL_ATTACK_STEPS,
        epsilons=epsilons,
        max_samples=max_samples,
        seed=0,
        sanity_checks=False,
        device=device,
    )
    return report.clean_accuracy, report.robust_accuracy


def evaluate_digits(model: nn.Module) -> tuple[float, float]:
    """(clean accuracy, PGD-20 accuracy) on the 360 test images."""
    setup = digits_setup()
    return pgd20_accuracies(
        model, setup.test, setup.threat, max_samples=len(setup.test), device="cpu"
    )


def image_passes(metrics: EpochMetrics, *, batch_size: int) -> int:
    """The engine's cumulative batch `gradient_passes` as passes over training images."""
    steps_per_epoch = math.ceil(len(digits_setup().train) / batch_size)
    return round(metrics.gradient_passes * len(digits_setup().train) / steps_per_epoch)


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) over seeds."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def fmt_pct(values: Sequence[float]) -> str:
    """Accuracies (fractions) as 'mean ± std' in percent."""
    mean, spread = mean_and_spread(values)
    return f"{100 * mean:.1f} ± {100 * spread:.1f}"


def fmt_num(values: Sequence[float], digits: int = 1) -> str:
    mean, spread = mean_and_spread(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def summary(values: Sequence[float]) -> dict[str, Any]:
    """JSON-ready mean, std, min, max and the values themselves."""
    mean, spread = mean_and_spread(values)
    values = [float(v) for v in values]
    return {
        "mean": mean,
        "std": spread,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "values": values,
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # The GPU the machine has (a benchmark's own payload says which device it ran on).
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # Other work shares this machine: the load (1, 5, 15 min) when the results were written.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_results(
    name: str,
    payload: dict[str, Any],
    *,
    tables: Sequence[str],
    started: float,
    args: argparse.Namespace | None = None,
) -> Path:
    """Write benchmarks/results/<name>.json (<name>_quick.json for --quick), with the machine,
    and print the Markdown tables."""
    if args is not None and getattr(args, "quick", False) and not name.endswith("_quick"):
        name += "_quick"  # a --quick run only checks the code: it never replaces real figures
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "command": " ".join(["python -m benchmarks." + Path(sys.argv[0]).stem, *sys.argv[1:]]),
        "arguments": vars(args) if args is not None else None,
        "machine": machine_info(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        **payload,
        "tables_markdown": list(tables),
    }
    path = RESULTS_DIR / f"{name}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    temporary.replace(path)
    machine = data["machine"]
    print()
    print(
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"torch {machine['torch']} ({machine['torch_threads']} threads), {machine['date']}; "
        f"wall time {data['wall_seconds']} s; load average {machine['load_average']}"
    )
    for table in tables:
        print()
        print(table)
    print()
    print(f"Wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def base_parser(description: str, *, seeds: int | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if seeds is not None:
        parser.add_argument(
            "--seeds", type=int, default=seeds, help=f"number of seeds, 0..N-1 (default {seeds})"
        )
    parser.add_argument(
        "--quick", action="store_true", help="a much shorter run, to check that it works"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help=f"torch CPU threads (default {DEFAULT_THREADS})",
    )
    return parser


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
