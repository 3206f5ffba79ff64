"""A 1 GB model upload through the API: throughput and the API process's memory, folder vs S3.

The file: a safetensors state_dict of builtin:mlp for [3, 800, 814] inputs and 10 classes (its
first layer a 1,953,600 x 128 matrix; 1,000,249,184 bytes, seeded random values),
generated once into ~/.cache/robustify-bench (outside the repository) and reused.

For each store: a real uvicorn API process (the embedded SQLite database; no worker: an
upload needs none), ROBUSTIFY_MAX_MODEL_BYTES raised to 2 GiB, its TMPDIR in the run's
folder; the local folder store (the default), or an S3 store on a real SeaweedFS server
(tests/seaweed.py's `running_seaweedfs`: master, volume, filer and S3 gateway on loopback)
chosen by ROBUSTIFY_ARTIFACTS_URL=s3://bucket/prefix and ROBUSTIFY_S3_ENDPOINT_URL. The
client streams the file as multipart/form-data (httpx, from the open file); the upload is
timed from the request's start to the last body byte read from the file ("sent") and to the
201 answer (the store finished, the model checked in the upload checker's sandboxed child,
the row inserted). The answer's size and sha256 are checked against the file's.

Memory: the API process's VmRSS sampled every 50 ms (its peak, and the peak over its
baseline just before the upload) and its VmHWM; the upload checker's child processes (which
load the model to check it) are reported apart: their summed PSS (shared pages counted once)
sampled every 0.2 s, idle before the upload and at its peak.
The stores are run round-robin `--repeats` times; each reports its median.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import save_file

from benchmarks.common import base_parser, log, markdown_table, set_threads, write_results
from benchmarks.service_processes import (
    ApiServer,
    code_state,
    create_api_key,
    descendants,
    pss_bytes,
    rss_bytes,
    service_settings,
    settings_environment,
)

# The tests' SeaweedFS server, imported from the tests folder (not a package): tests/seaweed.py
# is the one place that knows how to start `weed` with a key pair on free ports.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seaweed import SeaweedS3, running_seaweedfs

CACHE = Path.home() / ".cache" / "robustify-bench"
INPUT_SHAPE = (3, 800, 814)
QUICK_INPUT_SHAPE = (3, 200, 204)  # about 63 MB: --quick only checks the code
NUM_CLASSES = 10
BUCKET = "robustify-bench"
STORES = ("local folder", "S3 (SeaweedFS)")
MB = 1_000_000


def model_file(input_shape: tuple[int, int, int]) -> tuple[Path, str]:
    """The safetensors file for `input_shape` (made once) and its sha256."""
    name = "mlp_" + "x".join(map(str, input_shape)) + ".safetensors"
    path, digest_path = CACHE / name, CACHE / (name + ".sha256")
    if not (path.is_file() and digest_path.is_file()):
        CACHE.mkdir(parents=True, exist_ok=True)
        features = input_shape[0] * input_shape[1] * input_shape[2]
        generator = torch.Generator().manual_seed(0)
        tensors = {
            "1.weight": torch.randn(128, features, generator=generator) * 1e-3,
            "1.bias": torch.zeros(128),
            "3.weight": torch.randn(NUM_CLASSES, 128, generator=generator) * 0.1,
            "3.bias": torch.zeros(NUM_CLASSES),
        }
        temporary = path.with_suffix(".tmp")
        save_file(tensors, str(temporary))
        del tensors
        digest = hashlib.sha256()
        with temporary.open("rb") as file:
            while chunk := file.read(8 * 1024 * 1024):
                digest.update(chunk)
        temporary.replace(path)
        digest_path.write_text(digest.hexdigest())
        log(f"wrote {path} ({path.stat().st_size / MB:.0f} MB)")
    return path, digest_path.read_text().strip()


class TimedFile(io.FileIO):
    """A file that notes when the client has read its last byte (the body sent)."""

    finished: float | None = None

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if not chunk and self.finished is None:
            self.finished = time.perf_counter()
        return chunk


class MemorySampler:
    """The API process's VmRSS every 50 ms; its children's summed PSS every 4th sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self.children_baseline = self.children_pss()
        self.children_peak = self.children_baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def children_pss(self) -> int:
        return sum(pss_bytes(child) for child in descendants(self.pid))

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            if count % 4 == 0:
                self.children_peak = max(self.children_peak, self.children_pss())
            count += 1
            self._stop.wait(0.05)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def seaweedfs_when_free(folder: Path, *, patience: float = 600.0) -> Iterator[SeaweedS3]:
    """running_seaweedfs, started again while it fails on a port in use: `weed server -s3`
    also listens on fixed ports (Iceberg 8181, Lance 9101; tests/seaweed.py does not turn
    them off), so it cannot start while another session's server (a test run's) is up."""
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        attempt += 1
        stack = ExitStack()
        try:
            server = stack.enter_context(running_seaweedfs(folder / f"try-{attempt}"))
        except RuntimeError as exc:
            if "address already in use" not in str(exc) or time.monotonic() > deadline:
                raise
            log("SeaweedFS: a port is held by another server (a test run's?); waiting")
            time.sleep(10)
            continue
        with stack:
            yield server
        return


@contextmanager
def api_for(store: str, folder: Path, s3: SeaweedS3 | None) -> Iterator[tuple[ApiServer, str]]:
    """The API server of one run of `store`, and an API key."""
    overrides: dict[str, Any] = {"max_model_bytes": 2 * 1024**3, "run_webhook_delivery": False}
    extra: dict[str, str] = {"TMPDIR": str(folder / "tmp")}
    (folder / "tmp").mkdir(parents=True)
    if store != STORES[0]:
        assert s3 is not None
        overrides |= {
            "artifacts_url": f"s3://{BUCKET}/{folder.name}",
            "s3_endpoint_url": s3.endpoint_url,
        }
        extra |= {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": s3.region,
        }
    settings = service_settings(folder / "data", database_url=None, **overrides)
    api = ApiServer(settings_environment(settings, **extra), folder / "api.log")
    try:
        key = create_api_key(settings)
        api.wait_healthy()
        yield api, key
    finally:
        api.stop()


def upload_once(
    api: ApiServer, key: str, path: Path, digest: str, input_shape: tuple[int, int, int]
) -> dict[str, Any]:
    size = path.stat().st_size
    headers = {"Authorization": f"Bearer {key}"}
    with (
        httpx.Client(base_url=api.base_url, headers=headers, timeout=600) as client,
        TimedFile(path, "rb") as file,
        MemorySampler(api.pid) as memory,
    ):
        started = time.perf_counter()
        response = client.post(
            "/v1/models",
            files={"file": (path.name, file, "application/octet-stream")},
            data={
                "name": "mlp-1gb",
                "format": "safetensors",
                "architecture": "builtin:mlp",
                "num_classes": str(NUM_CLASSES),
                "input_shape": "[" + ",".join(map(str, input_shape)) + "]",
            },
        )
        answered = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"upload refused: {response.status_code} {response.text[:500]}")
    model = response.json()
    if model["size_bytes"] != size or model["sha256"] != digest:
        raise RuntimeError(f"stored {model['size_bytes']} bytes, sha256 {model['sha256']}")
    sent = (file.finished or time.perf_counter()) - started
    return {
        "bytes": size,
        "sent_seconds": sent,
        "answered_seconds": answered,
        "mb_per_second_answered": size / MB / answered,
        "mb_per_second_sent": size / MB / sent,
        "api_rss_baseline_mib": memory.baseline / 2**20,
        "api_rss_peak_mib": memory.peak / 2**20,
        "api_rss_peak_over_baseline_mib": (memory.peak - memory.baseline) / 2**20,
        "api_vmhwm_mib": rss_bytes(api.pid, "VmHWM") / 2**20,
        "checker_children_pss_baseline_mib": memory.children_baseline / 2**20,
        "checker_children_pss_peak_mib": memory.children_peak / 2**20,
    }


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    rows = []
    for store, runs in results.items():
        rows.append(
            [
                store,
                f"{runs[0]['bytes'] / MB:,.0f}",
                f"{median(runs, 'mb_per_second_answered'):.0f} ("
                + ", ".join(f"{run['mb_per_second_answered']:.0f}" for run in runs)
                + ")",
                f"{median(runs, 'mb_per_second_sent'):.0f}",
                f"{median(runs, 'answered_seconds'):.1f}",
                f"{median(runs, 'api_rss_peak_mib'):.0f}",
                f"{median(runs, 'api_rss_peak_over_baseline_mib'):+.0f}",
                f"{median(runs, 'checker_children_pss_baseline_mib'):.0f} -> "
                f"{median(runs, 'checker_children_pss_peak_mib'):.0f}",
            ]
        )
    return markdown_table(
        [
            "store",
            "MB",
            "MB/s to the 201 (runs)",
            "MB/s body sent",
            "s to the 201",
            "API peak RSS MiB",
            "over its baseline MiB",
            "checker children, summed PSS MiB: idle -> peak",
        ],
        rows,
    )


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    input_shape = QUICK_INPUT_SHAPE if args.quick else INPUT_SHAPE
    if args.quick:
        args.repeats = 1
    started = time.perf_counter()
    set_threads(1)  # this process only generates the file (once) and sends it
    path, digest = model_file(input_shape)
    results: dict[str, list[dict[str, Any]]] = {store: [] for store in STORES}
    with tempfile.TemporaryDirectory(prefix="robustify-bench-upload-") as temporary:
        folder = Path(temporary)
        with seaweedfs_when_free(folder / "seaweedfs") as s3:
            s3.create_bucket(BUCKET)
            for repeat in range(args.repeats):
                order = list(STORES) if repeat % 2 == 0 else list(reversed(STORES))
                for store in order:
                    run_folder = folder / f"run-{repeat}-{STORES.index(store)}"
                    with api_for(store, run_folder, s3) as (api, key):
                        result = upload_once(api, key, path, digest, input_shape)
                    results[store].append(result)
                    log(
                        f"{store}: {result['mb_per_second_answered']:.0f} MB/s, API peak RSS "
                        f"{result['api_rss_peak_mib']:.0f} MiB"
                    )
    payload = {
        "code": code_state(),
        "file": {"name": path.name, "bytes": path.stat().st_size, "sha256": digest},
        "architecture": "builtin:mlp",
        "input_shape": list(input_shape),
        "runs": results,
    }
    write_results("upload", payload, tables=[table(results)], started=started, args=args)


if __name__ == "__main__":
    main()
