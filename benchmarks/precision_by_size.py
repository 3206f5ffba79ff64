"""Where mixed precision and channels_last pay: the engine's images per second by image size.

throughput.py measures resnet18 at 3x32x32, where a step of a batch of 128 is short enough
that launching the kernels costs more than running them, and AMP's casts only add launches.
This one runs the same fine-tuning step (torchvision resnet18, random init, PGD-10 at Linf
8/255, batch 128, SGD; `adversarial_finetune` with guards, validation and the ramp-up off,
two epochs of `--batches` batches, the second timed) at several square image sizes, in fp32,
channels_last, AMP (bf16 where the GPU has it) and AMP + channels_last, each `--rounds` times
round-robin, medians kept. It needs CUDA; on the CPU only fp32 runs, as a check of the code.
Its figures set precision.AUTO_FP32_MAX_SIDE: the size up to which "auto" stays fp32.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from benchmarks.common import base_parser, log, markdown_table, set_threads, write_results
from benchmarks.throughput import (
    BATCH_SIZE,
    ENGINE_SETTINGS,
    device_description,
    engine_images_per_second,
    training_set,
)

SIZES = (32, 64, 128, 224)
SETTING_NAMES = (
    "robustify fp32 + cudnn.benchmark",
    "robustify channels_last (the defaults up to 128 px)",
    "robustify AMP",
    "robustify AMP + channels_last",
)


def measure(sizes: list[int], *, batches: int, rounds: int, device: torch.device) -> list[dict]:
    settings = [s for s in ENGINE_SETTINGS if s.name in SETTING_NAMES]
    if device.type != "cuda":
        settings = [s for s in ENGINE_SETTINGS if not s.needs_cuda and not s.compile]
    rows = []
    for size in sizes:
        train = training_set(batches, image_size=size)
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in settings}
        for round_index in range(rounds):
            rotation = round_index % len(settings)
            for setting in settings[rotation:] + settings[:rotation]:
                log(f"{size}px, round {round_index + 1}/{rounds}: {setting.name} ...")
                runs[setting.name].append(engine_images_per_second(setting, train, device))
        for name, results in runs.items():
            rate = statistics.median(result["images_per_second"] for result in results)
            rows.append(
                {"image_size": size, "setting": name, "images_per_second": rate, "runs": results}
            )
    return rows


def table(rows: list[dict]) -> str:
    names = list(dict.fromkeys(row["setting"] for row in rows))
    cells = []
    for size in dict.fromkeys(row["image_size"] for row in rows):
        at_size = {row["setting"]: row["images_per_second"] for row in rows
                   if row["image_size"] == size}  # fmt: skip
        base = at_size[names[0]]
        cells.append(
            [f"3x{size}x{size}"]
            + [f"{at_size[name]:.0f} ({at_size[name] / base:.2f}x)" for name in names]
        )
    return markdown_table(["images", *[f"{name}: images/s" for name in names]], cells)


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="square image sizes")
    parser.add_argument("--batches", type=int, default=4, help="timed batches of 128 (4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, medians kept (2)")
    args = parser.parse_args()
    device = torch.device(args.device)
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.quick:
        sizes, args.batches, args.rounds = sizes[:2], 1, 1
    set_threads(args.threads)
    started = time.perf_counter()
    rows = measure(sizes, batches=args.batches, rounds=args.rounds, device=device)
    payload = {
        "device": device_description(device),
        "model": "torchvision resnet18 (num_classes=10), random init",
        "batch_size": BATCH_SIZE,
        "timed_images": args.batches * BATCH_SIZE,
        "bf16_supported": device.type == "cuda" and torch.cuda.is_bf16_supported(),
        "results": rows,
    }
    write_results(f"precision_by_size-{device.type}", payload, tables=[table(rows)],
                  started=started, args=args)  # fmt: skip


if __name__ == "__main__":
    main()
