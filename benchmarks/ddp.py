"""Data-parallel adversarial fine-tuning: 1 process against N (torchrun), the same global batch.

The same run in every setting: the engine's `adversarial_finetune` of builtin:small_cnn (random
init: only the timing means something) on the first 1,280 builtin:digits32 images (3x32x32),
PGD-3 (Linf 8/255, step 2/255), a global batch of 128, 2 epochs, no validation; each setting
is launched by `torchrun --standalone --nproc-per-node N -m benchmarks.ddp_rank` (one process
included, so that all pay the same launcher), gloo between CPU processes. Rank 0 times the
steps; images per second are from its first step's end to its last's. Images per CPU-second
(the fine-tuning call's images over the CPU time of all ranks' threads) say what each setting
costs whatever share of a shared machine's cores it got.

On the CPU (`--device cpu`): 1 process with 1 thread, 1 process with `--threads` threads (2)
and `--processes` (2) processes of 1 thread each: on a 2-core machine the second and the third
use the same cores, by intra-op threads or by data parallelism. With `--device cuda`: 1 process
against N, one GPU each (nccl) or, with fewer GPUs than processes, sharing them (gloo).
The settings are run round-robin `--repeats` times; each reports its median.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import base_parser, log, markdown_table, write_results

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    processes: int
    threads: int  # torch threads per process

    @property
    def name(self) -> str:
        plural = "es" if self.processes > 1 else ""
        return f"{self.processes} process{plural} x {self.threads} thread(s)"


def settings_for(device: str, *, processes: int, threads: int) -> list[Setting]:
    if device == "cpu":
        return [Setting(1, 1), Setting(1, threads), Setting(processes, 1)]
    return [Setting(1, threads), Setting(processes, threads)]


def run_setting(
    setting: Setting, *, device: str, epochs: int, images: int, folder: Path
) -> dict[str, Any]:
    out = folder / f"{setting.processes}x{setting.threads}.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={setting.processes}", "-m", "benchmarks.ddp_rank", "--out", str(out),
        "--device", device, "--threads", str(setting.threads), "--epochs", str(epochs),
        "--images", str(images),
    ]  # fmt: skip
    environment = {
        **os.environ,
        # The repository first, and whatever the caller's path held after it.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": str(setting.threads),
    }
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, env=environment, check=True, timeout=600)
    result: dict[str, Any] = json.loads(out.read_text())
    result["launch_seconds"] = time.perf_counter() - started  # torchrun's start included
    return result


def summarize(setting: Setting, results: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [result["images_per_second"] for result in results]
    return {
        "name": setting.name,
        "processes": setting.processes,
        "threads_per_process": setting.threads,
        "backend": results[0]["backend"],
        "device": results[0]["device"],
        "images_per_second": statistics.median(rates),
        "images_per_second_runs": rates,
        "images_per_cpu_second": statistics.median(r["images_per_cpu_second"] for r in results),
        "launch_seconds_runs": [result["launch_seconds"] for result in results],
        "runs": results,
    }


def table(rows: list[dict[str, Any]]) -> str:
    single = rows[0]["images_per_second"]
    threaded = rows[1]["images_per_second"] if len(rows) > 2 else None
    cells = []
    for row in rows:
        rate = row["images_per_second"]
        cells.append(
            [
                row["name"],
                row["backend"] or "none (1 process)",
                f"{rate:.1f}",
                ", ".join(f"{value:.1f}" for value in row["images_per_second_runs"]),
                f"{rate / single:.2f}x",
                "—" if threaded is None else f"{rate / threaded:.2f}x",
                f"{row['images_per_cpu_second']:.1f}",
                f"{statistics.median(row['launch_seconds_runs']):.1f}",
            ]
        )
    return markdown_table(
        [
            "setting",
            "backend",
            "images/s (median)",
            "runs",
            "vs 1 process x 1 thread",
            "vs 1 process x 2 threads",
            "images per CPU-second, all ranks",
            "whole launch s",
        ],
        cells,
    )


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.set_defaults(threads=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=1280)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs, args.images = 1, 1, 512
    started = time.perf_counter()
    settings = settings_for(args.device, processes=args.processes, threads=args.threads)
    results: dict[Setting, list[dict[str, Any]]] = {setting: [] for setting in settings}
    with tempfile.TemporaryDirectory(prefix="robustify-bench-ddp-") as folder:
        for repeat in range(args.repeats):
            rotation = repeat % len(settings)
            for setting in settings[rotation:] + settings[:rotation]:
                result = run_setting(
                    setting,
                    device=args.device,
                    epochs=args.epochs,
                    images=args.images,
                    folder=Path(folder),
                )
                log(f"{setting.name}: {result['images_per_second']:.1f} images/s")
                results[setting].append(result)
    rows = [summarize(setting, results[setting]) for setting in settings]
    name = "ddp" if args.device == "cpu" else f"ddp-{args.device}"
    payload = {
        "architecture": "builtin:small_cnn",
        "data": f"builtin:digits32, first {args.images} training images",
        "attack": "PGD-3, Linf 8/255, step 2/255",
        "global_batch_size": 128,
        "settings": rows,
    }
    write_results(name, payload, tables=[table(rows)], started=started, args=args)


if __name__ == "__main__":
    main()
