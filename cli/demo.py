"""`robustify demo`: the whole product in one run, through the service, on the bundled digits.

It starts the embedded service (`robustify up`: the API and a real Celery worker) on a free
port with a data dir of its own, makes an API key, trains a small digits classifier as a user
would, then does what a user does over HTTP with the SDK: upload, harden while watching, download,
read the before/after evaluation and the report. The service is stopped at the end.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from cli.embedded import EmbeddedService
from cli.job_tables import accuracy_table, job_warnings
from cli.jobs import follow
from cli.live import transfer_bar
from cli.models import download_with_bar
from robustify import (
    ApiError,
    Client,
    Evaluation,
    EvaluationOptions,
    Hyperparameters,
    Job,
    ThreatModelOptions,
)

ARCHITECTURE = "builtin:digits_cnn"
INPUT_SHAPE = (1, 8, 8)
DATASET = "builtin:digits"
# At 0.2 a clean digits CNN is almost always fooled: the setting where hardening shows.
EPSILON = 0.2
TRAINING_ATTACK_STEPS = 7
EVALUATION_ATTACK_STEPS = 20
# The clean-accuracy allowance (the best epoch's and the verdict's). The validation split is
# held out of the training data, which the uploaded CNN has seen: it scores ~2 points higher
# there than on the test split. With the default 0.03 the probe's cautious choice on this CNN
# (0.002: README, zoo) hands back a model 3.3 test points less clean, and the verdict says
# clean_dropped; the demo allows 0.05 until the probe stops undershooting (issue 8).
MAX_CLEAN_DROP = 0.05


@dataclass(frozen=True)
class DemoResult:
    job: Job
    uploaded: Path
    hardened: Path | None
    report: Path | None

    @property
    def before(self) -> Evaluation | None:
        return self.job.metrics.before

    @property
    def after(self) -> Evaluation | None:
        return self.job.metrics.after

    @property
    def hardening_helped(self) -> bool:
        return (
            self.job.status == "succeeded"
            and self.before is not None
            and self.after is not None
            and self.after.robust_accuracy > self.before.robust_accuracy
        )


def train_digits_model(path: Path, *, seed: int) -> Path:
    """The user's side: a clean digits CNN, saved as a state_dict (seconds on a CPU)."""
    import torch

    from core.robust import load_dataset, save_model
    from core.robust.models.architectures import build_architecture
    from core.robust.models.modelio import model_from_module
    from core.robust.pretrain import train_clean

    data = load_dataset(DATASET)
    torch.manual_seed(seed)
    net = build_architecture(ARCHITECTURE, input_shape=INPUT_SHAPE, num_classes=10)
    net = train_clean(net, data.train, seed=seed, device="cpu")
    model = model_from_module(
        net, input_shape=INPUT_SHAPE, num_classes=10, architecture=ARCHITECTURE
    )
    save_model(model, path)
    return path


def run_demo(
    output_dir: Path,
    *,
    epochs: int = 10,
    seed: int = 0,
    data_dir: Path | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo, printing as it goes; the service's state lives in `data_dir` (default: a
    temporary folder, removed at the end) and its log in `output_dir`/service.log."""
    # Piped (a log, CI), lines stay whole up to 100 characters.
    console = console or (Console() if sys.stdout.isatty() else Console(width=100))
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="robustify-demo-") as temporary:
        service = EmbeddedService(data_dir or Path(temporary), log_path=output_dir / "service.log")
        console.print(
            "[bold]1.[/] Starting the service (`robustify up`: the API and a Celery worker)",
            highlight=False,
        )
        with service:
            console.print(
                f"[bold]2.[/] Training a clean {ARCHITECTURE} on {DATASET} "
                "(1437 train / 360 test images)",
                highlight=False,
            )
            uploaded = train_digits_model(output_dir / "digits-cnn.pt", seed=seed)
            service.wait_ready()
            key = service.create_api_key("demo")
            console.print(
                f"   the service is up at {service.url} (state in {service.data_dir})\n"
                "   created an API key",
                highlight=False,
            )
            with Client(service.url, key, timeout=120) as client:
                result = _use_the_service(
                    client, console, uploaded=uploaded, output_dir=output_dir, epochs=epochs,
                    seed=seed,
                )  # fmt: skip
            console.print("[bold]6.[/] Stopping the service", highlight=False)
    return result


def _use_the_service(
    client: Client,
    console: Console,
    *,
    uploaded: Path,
    output_dir: Path,
    epochs: int,
    seed: int,
) -> DemoResult:
    console.print(f"[bold]3.[/] Uploading {uploaded}", highlight=False)
    with transfer_bar(console, f"   {uploaded.name}") as on_progress:
        model = client.models.upload(
            uploaded,
            name="digits-cnn",
            input_shape=list(INPUT_SHAPE),
            num_classes=10,
            architecture=ARCHITECTURE,
            on_progress=on_progress,
        )
    console.print(f"   model {model.id} ({model.format}, checked by the API)", highlight=False)

    console.print(
        f"[bold]4.[/] Hardening it: adversarial fine-tuning, slow start / fast decay, "
        f"Linf epsilon {EPSILON}, {epochs} epochs",
        highlight=False,
    )
    job = client.jobs.create(
        kind="harden",
        model_id=model.id,
        dataset=DATASET,
        threat_model=ThreatModelOptions(norm="linf", epsilon=EPSILON, steps=TRAINING_ATTACK_STEPS),
        # No learning rate: the service's probe chooses it.
        hyperparameters=Hyperparameters(epochs=epochs, max_clean_drop=MAX_CLEAN_DROP),
        evaluation=EvaluationOptions(attack_steps=EVALUATION_ATTACK_STEPS),
        seed=seed,
    )
    console.print(f"   job {job.id}", highlight=False)
    job = follow(client, job.id, console, live=True)
    if job.status != "succeeded" or job.result_model_id is None:
        reason = f"{job.error.message} ({job.error.code})" if job.error else job.status
        console.print(f"[red]error:[/] job {job.id} {job.status}: {reason}", highlight=False)
        return DemoResult(job=job, uploaded=uploaded, hardened=None, report=None)

    hardened = output_dir / "digits-cnn-robust.pt"
    console.print(f"[bold]5.[/] Downloading the hardened model to {hardened}", highlight=False)
    download_with_bar(
        client, job.result_model_id, hardened, console, description=f"   {hardened.name}"
    )
    table = accuracy_table(job)
    if table is not None:
        console.print(table)
    for warning in job_warnings(job):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    report = _save_report(client, job, output_dir / "report.html", console)
    console.print(
        f"Uploaded model: {uploaded}\nHardened model (same format, same input): {hardened}",
        highlight=False,
    )
    return DemoResult(job=job, uploaded=uploaded, hardened=hardened, report=report)


def _save_report(client: Client, job: Job, path: Path, console: Console) -> Path | None:
    url = client.jobs.report_url(job.id)
    try:
        client.jobs.download_report(job.id, path)
    except ApiError as exc:
        console.print(f"Report: not available ({exc})", highlight=False)
        return None
    console.print(f"Report: {path}\n   (it was served at {url})", highlight=False)
    return path
