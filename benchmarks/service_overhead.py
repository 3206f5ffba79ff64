"""A harden job through the service against the same fine-tuning in-process: seconds and weights.

The job: the pretrained digits CNN (benchmarks.common's clean builtin:digits_cnn, seed 0)
hardened on builtin:digits, Linf 0.2, PGD-7, at batch 64 (`--batch-size`), peak_lr 0.05 (so
no probe), seed 0, evaluated before and after with PGD-10 alone on 200 test images; two
sizes, `--epochs` (4 and 24 by default), so that the service's fixed cost shows apart from
its cost per epoch.

(a) Through the service: a real uvicorn API process and a real Celery worker process (one
prefork child, one torch thread; the job's engine runs in its own sandboxed process, as in
production) on PostgreSQL (a fresh database) and Redis: the model uploaded once, then each
repeat a job submitted over HTTP, polled every 0.1 s until it succeeded, its result model
downloaded. Timed from the submit to the poll that saw `succeeded`, then the download.

(b) In-process, in this process (one torch thread): what the job's engine does, by the same
functions with the job's stored config: load the uploaded file, builtin:digits with the
job's validation holdout (core.robust.datasets.splits.with_validation, fraction 0.1, seed 0),
evaluate before, `adversarial_finetune`, evaluate after. Timed whole and fine-tuning alone.

The settings are run round-robin `--repeats` times; each reports its median. The service's
time is also cut into phases by the job's own stamps and events (queued, engine start and
evaluation before, the epochs, evaluation after). CPU-seconds: the worker's process tree (its
engine process included, sampled from /proc at every poll) and the API's, against this
process's own. The weights of every downloaded result are compared tensor by tensor
(torch.equal) with the in-process one's.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import torch
from torch import nn

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
    poll_until_ended,
    service_settings,
    settings_environment,
    submit_job,
    upload_digits_model,
)
from core.robust import adversarial_finetune, evaluate, load_dataset, load_model
from core.robust.datasets.splits import with_validation
from core.service.jobs.jobconfig import (
    evaluation_settings,
    finetune_config,
    threat_model,
    validation_fraction,
)

DATASET = "builtin:digits"
POLL_INTERVAL_SECONDS = 0.1


DEFAULT_BATCH_SIZE = 64


def job_body(model_id: str, *, epochs: int, batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, Any]:
    return {
        "kind": "harden",
        "model_id": model_id,
        "dataset": DATASET,
        "threat_model": {"norm": "linf", "epsilon": 0.2, "step_size": None, "steps": 7},
        "hyperparameters": {"epochs": epochs, "batch_size": batch_size, "peak_lr": 0.05},
        "evaluation": {"attack": "fast", "attack_steps": 10, "max_samples": 200},
        "seed": 0,
    }


def stored_config(job: dict[str, Any]) -> dict[str, Any]:
    """The job's config as the API stored it (every default filled in), as the engine reads it."""
    return {name: job[name] for name in ("threat_model", "hyperparameters", "evaluation", "seed")}


def net_of(model: nn.Module) -> nn.Module:
    """The plain network inside a RobustModel (its normalisation wrapper set aside)."""
    net = model.net
    assert isinstance(net, nn.Module)
    return net


def load_digits_model(path: Path) -> Any:
    return load_model(
        path, input_shape=(1, 8, 8), num_classes=10, architecture="builtin:digits_cnn"
    )


def event_phases(job: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, float]:
    """The job's own stamps cut into phases: queued (created -> started), start and evaluation
    before (started -> the 'evaluated' event), training (-> the last epoch's event),
    evaluation after and the result stored (-> finished)."""
    stamp = datetime.fromisoformat
    created, started = stamp(job["created_at"]), stamp(job["started_at"])
    finished = stamp(job["finished_at"])
    before = next(stamp(e["created_at"]) for e in events if e["type"] == "evaluated")
    last_epoch = [stamp(e["created_at"]) for e in events if e["type"] == "epoch"][-1]
    return {
        "queued": (started - created).total_seconds(),
        "start_and_before": (before - started).total_seconds(),
        "training": (last_epoch - before).total_seconds(),
        "after": (finished - last_epoch).total_seconds(),
        "created_to_finished": (finished - created).total_seconds(),
    }


@dataclass
class ServiceRun:
    epochs: int
    job_seconds: float  # submit -> the poll that saw succeeded
    download_seconds: float
    cpu_seconds: float  # the worker's process tree (its engine process included) and the API's
    worker_cpu_seconds: float
    api_cpu_seconds: float
    phases: dict[str, float]  # from the job's own stamps and events
    state_dict: dict[str, torch.Tensor]
    job: dict[str, Any]
    events: list[dict[str, Any]]


def run_service(
    client: httpx.Client,
    api: ApiServer,
    worker: Worker,
    model_id: str,
    *,
    epochs: int,
    batch_size: int,
    folder: Path,
) -> ServiceRun:
    worker_cpu, api_cpu = TreeCpu(worker.pid), TreeCpu(api.pid)

    def sample() -> None:
        worker_cpu.sample()
        api_cpu.sample()

    started = time.perf_counter()
    job_id = submit_job(client, job_body(model_id, epochs=epochs, batch_size=batch_size))
    job = poll_until_ended(
        client,
        job_id,
        timeout=900,
        interval=POLL_INTERVAL_SECONDS,
        watch=[api, worker],
        on_poll=sample,
    )
    job_seconds = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['status']}: {job['error']}")
    fetched = time.perf_counter()
    download = client.get(f"/v1/models/{job['result_model_id']}/content").raise_for_status()
    download_seconds = time.perf_counter() - fetched
    sample()
    path = folder / f"{job_id}.pt"
    path.write_bytes(download.content)
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 100}).json()["items"]
    return ServiceRun(
        epochs=epochs,
        job_seconds=job_seconds,
        download_seconds=download_seconds,
        cpu_seconds=worker_cpu.seconds + api_cpu.seconds,
        worker_cpu_seconds=worker_cpu.seconds,
        api_cpu_seconds=api_cpu.seconds,
        phases=event_phases(job, events),
        state_dict=load_digits_model(path).net.state_dict(),
        job=job,
        events=events,
    )


@dataclass
class InProcessRun:
    epochs: int
    seconds: float  # load, evaluate before, fine-tune, evaluate after
    cpu_seconds: float
    phases: dict[str, float]  # load, before, training, after
    state_dict: dict[str, torch.Tensor]


def run_in_process(model_file: Path, config: dict[str, Any]) -> InProcessRun:
    """What the job's engine process does (core.service.engine.process.EngineJob), without its
    channel to the worker, its epoch files and saving the result."""
    started, cpu = time.perf_counter(), time.process_time()
    model = load_digits_model(model_file)
    data = load_dataset(DATASET)
    data = with_validation(data, fraction=validation_fraction(config), seed=config["seed"])
    threat = threat_model(config)
    evaluation = evaluation_settings(config)
    max_samples = evaluation.max_samples
    assert max_samples is not None  # the job names it: no budget to size it by

    def evaluated(net: Any) -> Any:
        return evaluate(
            net,
            data.test,
            threat,
            attack_steps=evaluation.attack_steps,
            restarts=evaluation.restarts,
            epsilons=evaluation.epsilons,
            attack=evaluation.attack,
            max_samples=max_samples,
            seed=config["seed"],
            device="cpu",
        )

    marks = [time.perf_counter()]
    evaluated(model)
    marks.append(time.perf_counter())
    result = adversarial_finetune(
        model,
        data.train,
        threat,
        finetune_config(config, dataset=DATASET, input_shape=data.input_shape),
        val=data.val,
        device="cpu",
    )
    marks.append(time.perf_counter())
    evaluated(result.model)
    marks.append(time.perf_counter())
    return InProcessRun(
        epochs=config["hyperparameters"]["epochs"],
        seconds=marks[-1] - started,
        cpu_seconds=time.process_time() - cpu,
        phases={
            "load": marks[0] - started,
            "before": marks[1] - marks[0],
            "training": marks[2] - marks[1],
            "after": marks[3] - marks[2],
        },
        state_dict={k: v.detach().clone() for k, v in net_of(result.model).state_dict().items()},
    )


def weight_differences(
    ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Which tensors differ and by how much (the same keys expected)."""
    same_keys = sorted(ours) == sorted(theirs)
    differing = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    largest = max(
        (float((ours[name].float() - theirs[name].float()).abs().max()) for name in ours),
        default=0.0,
    )
    return {
        "same_keys": same_keys,
        "tensors": len(ours),
        "differing_tensors": differing,
        "max_abs_difference": largest,
        "identical": same_keys and not differing,
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


def runs(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def size_row(epochs: int, service: list[ServiceRun], local: list[InProcessRun]) -> list[str]:
    job = [run.job_seconds for run in service]
    whole = [run.seconds for run in local]
    service_cpu = median([run.cpu_seconds for run in service])
    local_cpu = median([run.cpu_seconds for run in local])
    return [
        str(epochs),
        f"{median(job):.1f} ({runs(job)})",
        f"{median(whole):.1f} ({runs(whole)})",
        f"{median(job) / median(whole):.2f}x",
        f"+{median(job) - median(whole):.1f}",
        f"{service_cpu:.1f} / {local_cpu:.1f} = {service_cpu / local_cpu:.2f}x",
        f"{median([run.download_seconds for run in service]):.3f}",
    ]


def phase_row(name: str, service: float | None, local: float | None) -> list[str]:
    cells = ["—" if value is None else f"{value:.2f}" for value in (service, local)]
    extra = "—" if service is None or local is None else f"{service - local:+.2f}"
    return [name, *cells, extra]


def phase_table(service: list[ServiceRun], local: list[InProcessRun]) -> str:
    def ours(name: str) -> float:
        return median([run.phases[name] for run in service])

    def theirs(name: str) -> float:
        return median([run.phases[name] for run in local])

    rows = [
        phase_row("waiting in the queue (created -> started)", ours("queued"), None),
        phase_row(
            "start, load, evaluation before",
            ours("start_and_before"),
            theirs("load") + theirs("before"),
        ),
        phase_row("training (the epochs)", ours("training"), theirs("training")),
        phase_row("evaluation after, result stored", ours("after"), theirs("after")),
        phase_row(
            "submit -> seen succeeded (poll 0.1 s)",
            median([run.job_seconds for run in service]),
            median([run.seconds for run in local]),
        ),
    ]
    return markdown_table(
        ["phase", "service s (median)", "in-process s (median)", "difference s"], rows
    )


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--epochs",
        type=int,
        nargs="+",
        default=[4, 24],
        help="job sizes (epochs), each run both ways: the fixed cost shows as their difference",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"the job's batch size (default {DEFAULT_BATCH_SIZE}; another writes "
        "service_overhead-batch<N>.json)",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs = 1, [1]
    started = time.perf_counter()
    set_threads(1)  # the worker's job trains with one torch thread too
    service: list[ServiceRun] = []
    local: list[InProcessRun] = []
    configs: dict[int, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="robustify-bench-overhead-") as temporary,
        fresh_postgres_database() as database_url,
    ):
        folder = Path(temporary)
        model_file = digits_model_file(pretrained_digits_cnn(0).model, folder / "digits_cnn.pt")
        settings = service_settings(folder / "data", database_url=database_url)
        env = settings_environment(settings)
        api = ApiServer(env, folder / "api.log")
        worker = Worker(settings, env, folder / "worker.log")
        try:
            api.wait_healthy()
            headers = {"Authorization": f"Bearer {create_api_key(settings)}"}
            with httpx.Client(base_url=api.base_url, headers=headers, timeout=120) as client:
                model_id = upload_digits_model(client, model_file)
                for repeat in range(args.repeats):
                    for epochs in args.epochs:
                        # Round-robin: the service first in even repeats, in-process first in
                        # odd ones (the first run of a size is the service's: its stored
                        # config is what the in-process run reads).
                        order = ["service", "in-process"]
                        if repeat % 2 and epochs in configs:
                            order.reverse()
                        for setting in order:
                            if setting == "service":
                                run = run_service(
                                    client,
                                    api,
                                    worker,
                                    model_id,
                                    epochs=epochs,
                                    batch_size=args.batch_size,
                                    folder=folder,
                                )
                                configs.setdefault(epochs, stored_config(run.job))
                                service.append(run)
                                log(f"{epochs} epochs, service: {run.job_seconds:.2f} s")
                            else:
                                local.append(run_in_process(model_file, configs[epochs]))
                                log(f"{epochs} epochs, in-process: {local[-1].seconds:.2f} s")
        finally:
            worker.stop()
            api.stop()
    by_size = {
        epochs: (
            [run for run in service if run.epochs == epochs],
            [run for run in local if run.epochs == epochs],
        )
        for epochs in args.epochs
    }
    comparisons = {
        epochs: [weight_differences(theirs[0].state_dict, run.state_dict) for run in ours]
        for epochs, (ours, theirs) in by_size.items()
    }
    repeatable = {
        epochs: [weight_differences(theirs[0].state_dict, run.state_dict) for run in theirs[1:]]
        for epochs, (_, theirs) in by_size.items()
    }
    identical = all(c["identical"] for each in comparisons.values() for c in each)
    ratios = {
        epochs: median([r.job_seconds for r in ours]) / median([r.seconds for r in theirs])
        for epochs, (ours, theirs) in by_size.items()
    }
    sizes = markdown_table(
        [
            "epochs",
            "service: submit -> succeeded s (runs)",
            "in-process s (runs)",
            "overhead ratio",
            "extra s",
            "CPU-seconds: service (worker tree + API) / in-process",
            "result download s",
        ],
        [size_row(epochs, *by_size[epochs]) for epochs in args.epochs],
    )
    largest = max(args.epochs)
    tables = [sizes, phase_table(*by_size[largest])]
    payload = {
        "code": code_state(),
        "job": job_body("<the uploaded digits CNN>", epochs=largest, batch_size=args.batch_size),
        "epochs": args.epochs,
        "stored_configs": configs,
        "database": "PostgreSQL (a fresh database), Redis broker",
        "overhead_ratio": {str(epochs): ratio for epochs, ratio in ratios.items()},
        "goal": "at most 1.05x",
        "phase_table_epochs": largest,
        "weights_compared": (
            "every tensor of the result model's state_dict (the weights the job hands back, "
            "downloaded) against the in-process adversarial_finetune result's, torch.equal; "
            "the first in-process run of each size is the reference"
        ),
        "weights_identical": identical,
        "weights_service_vs_in_process": comparisons,
        "weights_in_process_repeats": repeatable,
        "service_runs": [
            {
                key: value
                for key, value in vars(run).items()
                if key not in {"state_dict", "job", "events"}
            }
            | {
                "best_epoch": run.job["metrics"]["best_epoch"],
                "events": [(e["created_at"], e["type"], e["message"]) for e in run.events],
            }
            for run in service
        ],
        "in_process_runs": [
            {key: value for key, value in vars(run).items() if key != "state_dict"} for run in local
        ],
    }
    log(f"overhead {ratios}; weights identical: {identical}")
    # Another batch size is a diagnostic (fewer batches, the same epoch files): its own file.
    name = "service_overhead"
    if args.batch_size != DEFAULT_BATCH_SIZE:
        name += f"-batch{args.batch_size}"
    write_results(name, payload, tables=tables, started=started, args=args)


if __name__ == "__main__":
    main()
