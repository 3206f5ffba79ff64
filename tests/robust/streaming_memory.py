"""Peak memory of loading an ImageFolder archive and reading one epoch of it, in a fresh process.

    python tests/robust/streaming_memory.py ARCHIVE --threshold BYTES [--workers N]

Prints one JSON line: the RSS before loading, the peak RSS from then to the epoch's end (VmHWM,
reset after the imports), the images read and the seconds. DataLoader workers are forked from
this process and not counted. Run on archives of 2,000 and 8,000 synthetic images for the README.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    # Linux: "5" resets VmHWM (the peak RSS) to the current RSS, so the imports' peak is not
    # counted as the dataset's.
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archive", type=Path)
    parser.add_argument("--threshold", type=int, required=True)
    parser.add_argument("--workers", type=int, default=0)
    arguments = parser.parse_args()

    import torch

    from core.robust.datasets.loading import load_dataset

    torch.set_num_threads(1)
    _reset_peak_rss()
    before = _status_bytes("VmRSS")
    started = time.perf_counter()
    data = load_dataset(
        arguments.archive,
        stream_threshold_bytes=arguments.threshold,
        stream_workers=arguments.workers,
    )
    loaded = time.perf_counter()
    images = 0
    for x, _labels in data.train.batches(128, generator=torch.Generator().manual_seed(0)):
        images += len(x)
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "kind": type(data.train).__name__,
                "images": images,
                "rss_before_bytes": before,
                "peak_rss_bytes": _status_bytes("VmHWM"),
                "load_seconds": round(loaded - started, 3),
                "epoch_seconds": round(finished - loaded, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
