"""A worker's peak memory and images per second with an ImageFolder dataset streamed from disk,
against the same images held in memory, at growing dataset sizes.

The benchmark writes synthetic ImageFolder trees once into a cache folder (`--cache`, reused
across runs): `train/` holds N 3x32x32 RGB PNGs in 10 class folders (a class-tinted noise
image each), `test/` a fixed 500. For each size and each path, a fresh process
(benchmarks.data_scale_measure) loads the tree with `load_image_folder` (the loader the
engine uses on an extracted archive; its `stream_threshold_bytes` is the knob, past which a
split is a StreamedImageDataset decoded by `--workers` DataLoader processes), reads one epoch
of batches of 128, then takes `--train-steps` steps of the engine's adversarial fine-tuning
(builtin:small_cnn, PGD-3 Linf 8/255, batch 128; 0 steps: the whole epoch). It reports
the peak RSS of the process, and of the process plus its DataLoader workers' private memory
(USS), above the process's RSS after the imports, once after the epoch of batches and once with the
training, the pass's and the training's images per second, and the streamed/in-memory ratios.
Every figure is MiB over the process's own size after importing torch (~800 MiB RSS here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import base_parser, log, markdown_table, write_results

CLASSES = 10
TEST_IMAGES = 500
CHUNK = 1000  # images drawn from one seeded generator: a smaller set is a prefix of a larger
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "robustify-bench-data_scale"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _write_images(folder: Path, count: int, *, seed: int) -> None:
    for start in range(0, count, CHUNK):
        rng = np.random.default_rng([seed, start])
        for index in range(start, min(start + CHUNK, count)):
            label = index % CLASSES
            noise = rng.integers(0, 160, size=(32, 32, 3))
            tint = np.array([label * 9, 90 - label * 9, 40], dtype=np.int64)
            pixels = (noise + tint).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(
                folder / f"class_{label}" / f"{index:06d}.png", compress_level=1
            )


def image_folder(cache: Path, size: int) -> tuple[Path, float]:
    """The tree with `size` training images (written now unless the cache has it) and the
    seconds its writing took (0 when cached)."""
    folder = cache / f"images_{size}"
    complete = folder / ".complete"
    if complete.exists():
        return folder, 0.0
    started = time.perf_counter()
    for split in ("train", "test"):
        for label in range(CLASSES):
            (folder / split / f"class_{label}").mkdir(parents=True, exist_ok=True)
    _write_images(folder / "train", size, seed=0)
    _write_images(folder / "test", TEST_IMAGES, seed=1)
    complete.touch()
    return folder, time.perf_counter() - started


def run_measure(
    folder: Path, *, mode: str, workers: int, train_steps: int, threads: int
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.data_scale_measure", "--folder", str(folder),
        "--mode", mode, "--workers", str(workers), "--train-steps", str(train_steps),
        "--threads", str(threads),
    ]  # fmt: skip
    search_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": search_path, "OMP_NUM_THREADS": str(threads)}
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=environment, check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def tables(runs: list[dict[str, Any]]) -> tuple[str, str]:
    rows, ratios = [], []
    for run in runs:
        for result in (run["memory"], run["streamed"]):
            path = "in memory" if result["mode"] == "memory" else (
                f"streamed, {result['workers']} workers"
            )  # fmt: skip
            rows.append(
                [
                    f"{run['size']:,}",
                    path,
                    f"{result['data_peak_rss_growth_mib']:.0f} / "
                    f"{result['data_tree_peak_growth_mib']:.0f}",
                    f"{result['peak_rss_growth_mib']:.0f} / {result['tree_peak_growth_mib']:.0f}",
                    f"{result['load_seconds']:.1f}",
                    f"{result['pass_images_per_second']:,.0f}",
                    f"{result['train_images_per_second']:.0f}",
                ]
            )
        memory, streamed = run["memory"], run["streamed"]
        ratios.append(
            [
                f"{run['size']:,}",
                f"{streamed['data_tree_peak_growth_mib']:.0f} / "
                f"{memory['data_tree_peak_growth_mib']:.0f} MiB",
                f"{streamed['tree_peak_growth_mib']:.0f} / "
                f"{memory['tree_peak_growth_mib']:.0f} MiB",
                f"{streamed['pass_images_per_second'] / memory['pass_images_per_second']:.3f}",
                f"{streamed['train_images_per_second'] / memory['train_images_per_second']:.2f}",
            ]
        )
    main = markdown_table(
        [
            "train images",
            "path",
            "peak MiB, load + epoch of batches (process RSS / + workers)",
            "peak MiB, with the training steps (process RSS / + workers)",
            "load s",
            "epoch of batches, images/s",
            "PGD-3 training, images/s",
        ],
        rows,
    )
    ratio = markdown_table(
        [
            "train images",
            "streamed / in memory: peak MiB with workers, load + epoch",
            "with training",
            "epoch of batches, images/s",
            "training, images/s",
        ],
        ratios,
    )
    return main, ratio


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[10_000, 30_000, 100_000],
        help="training images per set, comma-separated (default 10000,30000,100000)",
    )
    parser.add_argument("--workers", type=int, default=2, help="streaming DataLoader workers")
    parser.add_argument("--train-steps", type=int, default=16, help="0: a whole epoch")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.train_steps = [2_000, 4_000], 3
    started = time.perf_counter()
    runs = []
    for size in args.sizes:
        folder, written = image_folder(args.cache, size)
        log(f"{size} images in {folder}" + (f" (written in {written:.0f} s)" if written else ""))
        run: dict[str, Any] = {"size": size, "folder": folder, "write_seconds": written}
        for mode in ("memory", "streamed"):
            run[mode] = run_measure(
                folder,
                mode=mode,
                workers=args.workers,
                train_steps=args.train_steps,
                threads=args.threads,
            )
            log(f"  {mode}: {json.dumps(run[mode])}")
        runs.append(run)
    main_table, ratio_table = tables(runs)
    payload = {
        "architecture": "builtin:small_cnn",
        "attack": "PGD-3, Linf 8/255, step 2/255",
        "batch_size": 128,
        "runs": runs,
    }
    write_results(
        "data_scale", payload, tables=[main_table, ratio_table], started=started, args=args
    )


if __name__ == "__main__":
    main()
