"""One measurement of benchmarks/data_scale.py, in a fresh process (so that its peak memory is
its own): load an ImageFolder tree in memory or streamed, read one epoch of its batches, then
take a fixed number of the engine's adversarial fine-tuning steps on it.

    python -m benchmarks.data_scale_measure --folder DIR --mode streamed|memory [--workers N]

Prints one JSON line. Memory: the process's peak RSS (VmHWM, reset after the imports), and the
peak of the whole process tree (this process and its DataLoader workers) sampled every 50 ms:
this process's RSS plus each worker's USS (its private pages: what a forked worker adds; the
pages it shares with this process are in this process's RSS already). The sum of every
process's RSS, in the JSON, counts those shared pages once per process. Both after the epoch
of batches and at the end.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import set_threads
from core.robust.datasets.imagefolder import MAX_DECODED_BYTES, load_image_folder
from core.robust.datasets.streamed import StreamedImageDataset
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.models.architectures import build_architecture
from core.robust.threat import ThreatModel

BATCH_SIZE = 128
THREAT = ThreatModel(norm="linf", epsilon=8 / 255, steps=3, step_size=2 / 255)
ARCHITECTURE = "builtin:small_cnn"
SAMPLE_SECONDS = 0.05
# Thresholds for load_image_folder: past one byte every split streams; below the loader's own
# cap on decoded pixels every split is held in memory.
STREAM_EVERYTHING = 1
HOLD_EVERYTHING = MAX_DECODED_BYTES


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def _uss_kib(pid: int | str) -> int:
    """The process's private pages (USS), from its smaps_rollup."""
    private = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            private += int(line.split()[1])
    return private


def _children() -> list[str]:
    """The process ids of this process's children (forked by any of its threads)."""
    found: list[str] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            found += (task / "children").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
    return found


class TreeMemory:
    """The peak of this process's RSS plus its children's USS, and of the plain sum of their
    RSS, sampled in a thread."""

    def __init__(self) -> None:
        self.peak_rss_kib = 0
        self.peak_kib = 0
        self.peak_processes = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        own = _status_kib("self", "VmRSS")
        tree, rss, processes = own, own, 1
        for pid in _children():
            try:
                worker_rss, worker_uss = _status_kib(pid, "VmRSS"), _uss_kib(pid)
            except (OSError, RuntimeError):  # a worker that exited between listing and reading
                continue
            tree, rss, processes = tree + worker_uss, rss + worker_rss, processes + 1
        self.peak_kib = max(self.peak_kib, tree)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_processes = max(self.peak_processes, processes)


def _reset_peak_rss() -> None:
    # Linux: "5" resets VmHWM (the peak RSS) to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")


def measure(folder: Path, *, mode: str, workers: int, train_steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_architecture(ARCHITECTURE, input_shape=(3, 32, 32), num_classes=10)
    config = FinetuneConfig(
        epochs=1, batch_size=BATCH_SIZE, peak_lr=0.05, seed=0, weight_interpolation=False
    )
    step_times: list[float] = []

    def on_batch(_epoch: int, _step: int, _steps: int, _loss: float) -> None:
        step_times.append(time.perf_counter())

    def should_stop() -> bool:  # asked before every batch: a fixed number of steps
        return 0 < train_steps <= len(step_times)

    _reset_peak_rss()
    baseline_kib = _status_kib("self", "VmRSS")
    with TreeMemory() as tree:
        started = time.perf_counter()
        data = load_image_folder(
            folder,
            name=folder.name,
            stream_threshold_bytes=STREAM_EVERYTHING if mode == "streamed" else HOLD_EVERYTHING,
            stream_workers=workers,
        )
        loaded = time.perf_counter()
        if isinstance(data.train, StreamedImageDataset) != (mode == "streamed"):
            raise RuntimeError(f"asked for {mode}, the loader gave {type(data.train).__name__}")
        images = 0
        for x, _labels in data.train.batches(BATCH_SIZE, generator=torch.Generator()):
            images += len(x)
        passed = time.perf_counter()
        tree.sample()
        data_peaks = (_status_kib("self", "VmHWM"), tree.peak_kib)
        adversarial_finetune(
            model, data.train, THREAT, config, on_batch=on_batch, should_stop=should_stop,
            device="cpu",
        )  # fmt: skip
        trained = time.perf_counter()
    steps = len(step_times)
    # From the first step's end to the last's: the steady rate, without the loader's start.
    steady = (steps - 1) * BATCH_SIZE / (step_times[-1] - step_times[0]) if steps > 1 else None
    return {
        "mode": mode,
        "kind": type(data.train).__name__,
        "workers": workers if mode == "streamed" else 0,
        "train_images": len(data.train),
        # Peaks over the RSS after the imports and the model: what the run added.
        "baseline_rss_mib": baseline_kib / 1024,
        "data_peak_rss_growth_mib": (data_peaks[0] - baseline_kib) / 1024,
        "data_tree_peak_growth_mib": (data_peaks[1] - baseline_kib) / 1024,
        "peak_rss_growth_mib": (_status_kib("self", "VmHWM") - baseline_kib) / 1024,
        "tree_peak_growth_mib": (tree.peak_kib - baseline_kib) / 1024,
        "tree_peak_rss_sum_mib": tree.peak_rss_kib / 1024,
        "tree_peak_processes": tree.peak_processes,
        "load_seconds": loaded - started,
        "pass_images": images,
        "pass_seconds": passed - loaded,
        "pass_images_per_second": images / (passed - loaded),
        "train_steps": steps,
        "train_seconds": trained - passed,
        "train_images_per_second": steady,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--mode", choices=["streamed", "memory"], required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=16, help="0: the whole epoch")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    result = measure(
        args.folder, mode=args.mode, workers=args.workers, train_steps=args.train_steps
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
