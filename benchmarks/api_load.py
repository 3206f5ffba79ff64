"""The API under 50 polling clients while a job trains: latency, requests/s, SQLite vs PostgreSQL.

For each database (the embedded SQLite file, then PostgreSQL in a fresh database of its own),
a real uvicorn API process (one process, as `robustify serve` runs) and a real Celery worker
(one torch thread) on Redis; the pretrained digits CNN uploaded, then one long harden job
(builtin:digits, PGD-7, peak_lr 0.05) that the worker trains through the whole window, and
19 more jobs queued behind it, so that the owner's list (`GET /v1/jobs`, 20 a page) is full.

Then `--clients` clients (asyncio tasks over one httpx pool of as many connections), each in
a closed loop for `--seconds`: the next request as soon as the last one answered, taking the
two endpoints in turn, `GET /v1/jobs/{id}` (the training job) and `GET /v1/jobs`. Latency is
each request's from send to the whole answer read; a latency includes the wait behind the
other clients' requests. The load generator, the API and the training job share this
machine's cores. API CPU-seconds per request: the API process's CPU over the window by the
requests answered.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    base_parser,
    log,
    markdown_table,
    pretrained_digits_cnn,
    set_threads,
    write_results,
)
from benchmarks.service_processes import (
    ApiServer,
    TreeCpu,
    Worker,
    code_state,
    create_api_key,
    digits_model_file,
    fresh_postgres_database,
    service_settings,
    settings_environment,
    submit_job,
    upload_digits_model,
    wait_until,
)

DATABASES = ("sqlite", "postgresql")
ENDPOINTS = ("GET /v1/jobs/{id}", "GET /v1/jobs")
LISTED_JOBS = 20  # the list's default page


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def harden_body(model_id: str, *, epochs: int) -> dict[str, Any]:
    return {
        "kind": "harden",
        "model_id": model_id,
        "dataset": "builtin:digits",
        "threat_model": {"norm": "linf", "epsilon": 0.2, "step_size": None, "steps": 7},
        "hyperparameters": {"epochs": epochs, "batch_size": 64, "peak_lr": 0.05},
        "evaluation": {"attack": "fast", "attack_steps": 10, "max_samples": 200},
        "seed": 0,
    }


async def load(
    base_url: str, headers: dict[str, str], job_id: str, *, clients: int, seconds: float
) -> dict[str, Samples]:
    samples = {endpoint: Samples() for endpoint in ENDPOINTS}
    paths = {ENDPOINTS[0]: f"/v1/jobs/{job_id}", ENDPOINTS[1]: "/v1/jobs"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=60
    ) as client:
        deadline = time.perf_counter() + seconds

        async def poller(index: int) -> None:
            turn = index % 2  # half the clients start with each endpoint
            while time.perf_counter() < deadline:
                endpoint = ENDPOINTS[turn]
                turn = 1 - turn
                started = time.perf_counter()
                try:
                    response = await client.get(paths[endpoint])
                except httpx.HTTPError as exc:
                    samples[endpoint].errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                elapsed = time.perf_counter() - started
                bucket = samples[endpoint]
                bucket.statuses[response.status_code] = (
                    bucket.statuses.get(response.status_code, 0) + 1
                )
                if response.status_code == 200:
                    bucket.latencies.append(elapsed)

        await asyncio.gather(*(poller(index) for index in range(clients)))
    return samples


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize(samples: Samples, *, seconds: float) -> dict[str, Any]:
    values = samples.latencies
    return {
        "ok": len(values),
        "statuses": samples.statuses,
        "errors": len(samples.errors),
        "error_examples": samples.errors[:5],
        "requests_per_second": len(values) / seconds,
        "p50_ms": 1000 * percentile(values, 0.50) if values else None,
        "p95_ms": 1000 * percentile(values, 0.95) if values else None,
        "p99_ms": 1000 * percentile(values, 0.99) if values else None,
        "mean_ms": 1000 * statistics.fmean(values) if values else None,
        "max_ms": 1000 * max(values) if values else None,
    }


@contextmanager
def database_url(database: str) -> Iterator[str | None]:
    if database == "postgresql":
        with fresh_postgres_database() as url:
            yield url
    else:
        with nullcontext():
            yield None  # the embedded default: sqlite:///<data_dir>/robustify.db


def measure(
    database: str, model_file: Path, *, clients: int, seconds: float, epochs: int
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"robustify-bench-load-{database}-") as temporary,
        database_url(database) as url,
    ):
        folder = Path(temporary)
        settings = service_settings(folder / "data", database_url=url)
        env = settings_environment(settings)
        api = ApiServer(env, folder / "api.log")
        worker = Worker(settings, env, folder / "worker.log")
        try:
            api.wait_healthy()
            headers = {"Authorization": f"Bearer {create_api_key(settings)}"}
            with httpx.Client(base_url=api.base_url, headers=headers, timeout=60) as client:
                log(f"{database}: the API answers")
                model_id = upload_digits_model(client, model_file)
                training = submit_job(client, harden_body(model_id, epochs=epochs))
                for _ in range(LISTED_JOBS - 1):
                    submit_job(client, harden_body(model_id, epochs=1))

                def training_started() -> bool:
                    worker.check_alive()
                    job = client.get(f"/v1/jobs/{training}").json()
                    return bool(job["progress"].get("phase") == "training")

                wait_until(training_started, timeout=120, what="the job to train", interval=0.3)
                before = client.get(f"/v1/jobs/{training}").json()["progress"]
                log(f"{database}: the job trains; {clients} clients for {seconds:.0f} s")
                cpu = TreeCpu(api.pid)
                client_cpu = time.process_time()
                started = time.perf_counter()
                samples = asyncio.run(
                    load(api.base_url, headers, training, clients=clients, seconds=seconds)
                )
                window = time.perf_counter() - started
                client_cpu = time.process_time() - client_cpu
                cpu.sample()
                job = client.get(f"/v1/jobs/{training}").json()
                if job["status"] != "running":
                    raise RuntimeError(f"the training job ended during the window: {job['status']}")
                listed = client.get("/v1/jobs").json()["items"]
        finally:
            worker.kill()  # its job is only the load's company: no graceful wait for it
            api.stop()
    answered = sum(len(s.latencies) for s in samples.values())
    return {
        "database": database,
        "window_seconds": window,
        "endpoints": {name: summarize(s, seconds=window) for name, s in samples.items()},
        "api_cpu_seconds": cpu.seconds,
        "api_cpu_ms_per_request": 1000 * cpu.seconds / max(1, answered),
        # The load generator's own CPU over the window (this process, one core at most).
        "client_cpu_seconds": client_cpu,
        "listed_jobs": len(listed),
        "training_progress_before": before,
        "training_progress_after": job["progress"],
    }


def median_cell(values: list[float], digits: int) -> str:
    """The median, then each run's value in brackets."""
    each = ", ".join(f"{value:.{digits}f}" for value in values)
    return f"{statistics.median(values):.{digits}f} ({each})"


def table(results: list[dict[str, Any]]) -> str:
    """Per database and endpoint: the medians over the runs (each run's figure in brackets)."""
    rows = []
    for database in DATABASES:
        runs = [result for result in results if result["database"] == database]
        for endpoint in ENDPOINTS:
            figures = [run["endpoints"][endpoint] for run in runs]

            failures = sum(
                n for f in figures for code, n in f["statuses"].items() if int(code) != 200
            ) + sum(f["errors"] for f in figures)
            rows.append(
                [
                    database,
                    endpoint,
                    *(
                        median_cell([f[key] for f in figures], 0)
                        for key in ("requests_per_second", "p50_ms", "p95_ms", "p99_ms")
                    ),
                    str(failures),
                ]
            )
    return markdown_table(
        ["database", "endpoint", "requests/s", "p50 ms", "p95 ms", "p99 ms", "non-200 or failed"],
        rows,
    )


def cost_table(results: list[dict[str, Any]]) -> str:
    """Per database: what the load cost (medians over the runs, each in brackets)."""
    rows = []
    for database in DATABASES:
        runs = [result for result in results if result["database"] == database]

        epochs = [
            (run["training_progress_after"].get("epoch") or 0)
            - (run["training_progress_before"].get("epoch") or 0)
            for run in runs
        ]
        rows.append(
            [
                database,
                median_cell([run["api_cpu_ms_per_request"] for run in runs], 1),
                median_cell([run["api_cpu_seconds"] / run["window_seconds"] for run in runs], 2),
                median_cell([run["client_cpu_seconds"] / run["window_seconds"] for run in runs], 2),
                median_cell(
                    [e / run["window_seconds"] for e, run in zip(epochs, runs, strict=True)], 2
                ),
            ]
        )
    return markdown_table(
        [
            "database",
            "API CPU ms per request",
            "API process, cores busy",
            "load generator, cores busy",
            "training job, epochs/s during the load",
        ],
        rows,
    )


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="the load's window, each run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each database, in turn")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats = 3.0, 1
    started = time.perf_counter()
    set_threads(1)  # this process only pretrains the uploaded model and sends requests
    model_file_folder = tempfile.TemporaryDirectory(prefix="robustify-bench-load-")
    with model_file_folder as folder:
        model_file = digits_model_file(pretrained_digits_cnn(0).model, Path(folder) / "digits.pt")
        results = []
        for repeat in range(args.repeats):
            order = list(DATABASES) if repeat % 2 == 0 else list(reversed(DATABASES))
            for database in order:
                # Enough epochs to train through the window (about 1 s an epoch unloaded).
                epochs = int(args.seconds) * 3 + 30
                result = measure(
                    database, model_file, clients=args.clients, seconds=args.seconds, epochs=epochs
                )
                result["repeat"] = repeat
                results.append(result)
                figures = result["endpoints"]
                log(
                    f"{database}: "
                    + ", ".join(
                        f"{name} {f['requests_per_second']:.0f}/s p50 {f['p50_ms']:.0f} ms"
                        for name, f in figures.items()
                    )
                )
    payload = {
        "code": code_state(),
        "clients": args.clients,
        "seconds": args.seconds,
        "runs": results,
    }
    write_results(
        "api_load",
        payload,
        tables=[table(results), cost_table(results)],
        started=started,
        args=args,
    )


if __name__ == "__main__":
    main()
