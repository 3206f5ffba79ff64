"""How the CLI shows things: transfer progress bars, a job's live progress, and tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from cli.sdk import Dataset, Evaluation, Event, Job, Model, ProgressCallback

PHASES = {
    "queued": "queued",
    "evaluating_before": "evaluating the model",
    "probing_lr": "choosing the learning rate",
    "training": "fine-tuning",
    "evaluating_after": "evaluating the result",
    "done": "done",
}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


def size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "-"
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# -- transfers ------------------------------------------------------------------------------


@contextmanager
def transfer_bar(console: Console, description: str) -> Iterator[ProgressCallback]:
    """A byte progress bar; yields the SDK's on_progress callback that moves it."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


# -- a job, live ----------------------------------------------------------------------------


class JobWatcher:
    """A live bar of a job (phase, epoch, loss, robust accuracy, ETA) with a line per epoch
    above it; its `on_event` and `on_progress` go to `RobustifyClient.wait`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("epoch {task.fields[epoch]}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("robust {task.fields[robust]}"),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
        )
        self.task = self.progress.add_task(
            PHASES["queued"], total=1.0, epoch="-", loss="-", robust="-", eta="-"
        )
        self.robust_accuracy: float | None = None
        self.loss: float | None = None  # the last batch's, kept once the job stops saying

    def __enter__(self) -> JobWatcher:
        self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.progress.stop()

    def on_event(self, event: Event) -> None:
        epoch = event.epoch
        if epoch is not None:
            self.robust_accuracy = epoch.val_robust_accuracy
            self.progress.console.print(
                f"   epoch {epoch.epoch:2d}  loss {epoch.train_loss:.3f}  lr {epoch.lr:.4f}  "
                f"val clean {percent(epoch.val_clean_accuracy)}  "
                f"val PGD {percent(epoch.val_robust_accuracy)}",
                highlight=False,
            )
        elif event.type == "evaluated":
            self.robust_accuracy = event.data.get("robust_accuracy")
            self.progress.console.print(
                f"   {event.message}: clean {percent(event.data.get('clean_accuracy'))}, "
                f"robust {percent(event.data.get('robust_accuracy'))}",
                highlight=False,
            )
        elif event.type in ("lr_probe", "guard", "interpolation", "warning"):
            style = "yellow" if event.type != "lr_probe" else ""
            self.progress.console.print(Text(f"   {event.message}", style=style))
        elif event.type == "started":
            self.progress.console.print(f"   started ({event.message})", highlight=False)

    def on_progress(self, job: Job) -> None:
        progress = job.progress
        phase = job.status if job.status in ("queued", "failed", "cancelled") else progress.phase
        epochs = progress.epochs or job.hyperparameters.get("epochs")
        # An ended job's progress may no longer carry the epoch: its metrics do.
        epoch = progress.epoch if progress.epoch is not None else len(job.epochs)
        if progress.loss is not None:
            self.loss = progress.loss
        self.progress.update(
            self.task,
            description=PHASES.get(phase or "", phase or job.status),
            completed=1.0 if job.status == "succeeded" else progress.fraction,
            epoch=f"{epoch}/{epochs}" if job.kind == "harden" and epochs else "-",
            loss=f"{self.loss:.3f}" if self.loss is not None else "-",
            robust=percent(self.robust_accuracy),
            eta=duration(progress.eta_seconds) if job.status == "running" else "-",
        )


# -- tables ---------------------------------------------------------------------------------


def accuracy_table(job: Job) -> Table | None:
    """The job's evaluation: before and after for a hardening job, one column for the other;
    each accuracy with its 95% interval on the images evaluated."""
    before, after = job.before, job.after
    if before is None:
        return None
    columns = [("before", before), ("after", after)] if after is not None else [("", before)]
    shown = after or before
    count = f"{shown.num_samples:,}" if shown.num_samples is not None else "?"
    title = f"{job.dataset} test set ({count} images)"
    caption = (
        f"(low–high): the 95% Wilson interval on those {count} images. Robust accuracy is an "
        "upper bound: a stronger attack may fool more."
    )
    table = Table(title=title, caption=caption, min_width=len(title) + 2)
    table.add_column("accuracy")
    for name, _ in columns:
        table.add_column(name or "model", justify="right")
    steps = shown.attack_steps
    at = f"eps {shown.epsilon:g}" if shown.epsilon is not None else "eps ?"

    def row(label: str, name: str, *, headline: bool = False) -> None:
        table.add_row(
            label,
            *(
                with_interval(getattr(evaluation, name), evaluation.confidence_intervals.get(name))
                for _, evaluation in columns
            ),
            style="bold" if headline else None,
        )

    row("clean", "clean_accuracy")
    if shown.attack in (None, "fast"):  # the headline is PGD (older servers: always)
        row(f"PGD-{steps} ({at})", "robust_accuracy", headline=True)
    else:
        row(f"PGD-{steps} ({at})", "pgd_accuracy")
        row(f"{headline_attacks(shown)} ({at})", "robust_accuracy", headline=True)
    # Older servers ran AutoAttack beside PGD; the autoattack preset makes it the headline.
    if shown.attack is None and any(e.autoattack_accuracy is not None for _, e in columns):
        row(f"AutoAttack ({at})", "autoattack_accuracy")
    for epsilon in _other_epsilons(shown):
        table.add_row(
            f"PGD-{steps} at eps {epsilon:g}",
            *(
                with_interval(
                    evaluation.accuracy_by_epsilon.get(epsilon),
                    evaluation.intervals_by_epsilon.get(epsilon),
                )
                for _, evaluation in columns
            ),
        )
    return table


def with_interval(value: float | None, bounds: tuple[float, float] | None) -> str:
    """52.0% (48.9–55.1): an accuracy and its interval, in percent."""
    if value is None or bounds is None:
        return percent(value)
    return f"{value:.1%} ({bounds[0] * 100:.1f}–{bounds[1] * 100:.1f})"


def headline_attacks(evaluation: Evaluation) -> str:
    """What the headline robust accuracy is the worst case of: the ensemble's attacks."""
    names = [stage.name for stage in evaluation.stages]
    if not names:  # no stages stored: the preset's attacks (older servers: PGD alone)
        names = [f"PGD-{evaluation.attack_steps}"]
        names += {"standard": ["APGD-CE", "APGD-T"], "autoattack": ["AutoAttack"]}.get(
            evaluation.attack or "", []
        )
    return names[0] if len(names) == 1 else "worst of " + ", ".join(names)


def _other_epsilons(evaluation: Evaluation) -> list[float]:
    return [
        eps
        for eps in sorted(evaluation.accuracy_by_epsilon)
        if eps != 0.0 and eps != evaluation.epsilon
    ]


def job_warnings(job: Job) -> list[str]:
    """The sanity checks that failed on the job's final evaluation (gradient masking)."""
    final = job.after or job.before
    return final.warnings if final is not None else []


def jobs_table(jobs: list[Job]) -> Table:
    table = Table(title="jobs")
    for column in (
        "id",
        "kind",
        "status",
        "model",
        "dataset",
        "progress",
        "clean",
        "robust",
        "created",
    ):
        table.add_column(column, no_wrap=column in ("id", "model", "created"))
    for job in jobs:
        final = job.after or job.before
        table.add_row(
            job.id,
            job.kind,
            status_text(job.status),
            job.model_id or "-",
            job.dataset,
            _progress_cell(job),
            percent(final.clean_accuracy) if final else "-",
            percent(final.robust_accuracy) if final else "-",
            when(job.created_at),
        )
    return table


def status_text(status: str) -> Text:
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    return Text(status, style=style.get(status, ""))


def _progress_cell(job: Job) -> str:
    progress = job.progress
    if job.kind == "harden" and progress.epochs and job.status == "running":
        return f"epoch {progress.epoch or 0}/{progress.epochs} ({progress.fraction:.0%})"
    if job.status == "running":
        return PHASES.get(progress.phase or "", "running")
    return "-"


def job_details(job: Job, *, report_url: str) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str | Text]] = [
        ("job", job.id),
        ("kind", job.kind),
        ("status", status_text(job.status)),
        ("model", job.model_id or "-"),
        ("dataset", job.dataset),
        ("threat model", _threat(job.threat_model)),
    ]
    if job.kind == "harden":
        rows.append(("hyperparameters", _knobs(job.hyperparameters)))
    rows += [("evaluation", _knobs(job.evaluation)), ("seed", str(job.seed))]
    if job.status == "running":
        rows.append(
            ("progress", f"{_progress_cell(job)}, ETA {duration(job.progress.eta_seconds)}")
        )
    if job.peak_lr is not None:
        how = "chosen by the probe" if job.lr_probe else "as asked"
        optimizer = f", {job.optimizer}" if job.optimizer else ""
        rows.append(("peak lr", f"{job.peak_lr:.3g} ({how}{optimizer})"))
    for decision in job.guards:
        rows.append(("guard", Text(str(decision.get("message", "")), style="yellow")))
    if job.interpolation is not None:
        rows.append(("interpolation", _interpolation(job.interpolation)))
    if job.best_epoch is not None:
        rows.append(("best epoch", str(job.best_epoch)))
    if job.result_model_id:
        rows.append(("hardened model", job.result_model_id))
    if job.error is not None:
        rows.append(("error", Text(f"{job.error.message} ({job.error.code})", style="red")))
    rows += [
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("report", report_url),
    ]
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else Text(value))
    return table


def _interpolation(interpolation: dict[str, Any]) -> Text:
    """The mix with the uploaded weights handed back, or why the best epoch's weights stayed."""
    fraction, epoch = interpolation.get("fraction"), interpolation.get("from_epoch")
    if fraction is None:
        return Text(f"no mix kept clean accuracy: epoch {epoch}'s weights", style="yellow")
    return Text(
        f"{fraction:.3g} of the way from the uploaded weights to epoch {epoch}'s "
        f"(val clean {percent(interpolation.get('val_clean_accuracy'))}, "
        f"val PGD {percent(interpolation.get('val_robust_accuracy'))})"
    )


def _threat(threat: dict[str, Any]) -> str:
    if not threat:
        return "-"
    return f"{threat.get('norm')} epsilon {threat.get('epsilon'):g}, PGD-{threat.get('steps')}"


def _knobs(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items() if value is not None)


def models_table(models: list[Model]) -> Table:
    table = Table(title="models")
    for column in (
        "id",
        "name",
        "format",
        "architecture",
        "input",
        "classes",
        "size",
        "from job",
        "created",
    ):
        table.add_column(column, no_wrap=column in ("id", "created"))
    for model in models:
        table.add_row(
            model.id,
            Text(model.name),
            model.format,
            model.architecture or "-",
            "x".join(str(d) for d in model.input_shape),
            str(model.num_classes),
            size(model.size_bytes),
            model.source_job_id or "-",
            when(model.created_at),
        )
    return table


def model_details(model: Model) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("model", model.id),
        ("name", model.name),
        ("format", model.format),
        ("architecture", model.architecture or "-"),
        ("input", "x".join(str(d) for d in model.input_shape)),
        ("classes", str(model.num_classes)),
        ("mean / std", f"{model.mean or '-'} / {model.std or '-'}"),
        ("size", size(model.size_bytes)),
        ("sha256", model.sha256),
        ("from job", model.source_job_id or "-"),
        ("created", when(model.created_at)),
    ]
    for name, value in rows:
        table.add_row(name, Text(value))
    for warning in model.warnings:
        table.add_row("warning", Text(warning, style="yellow"))
    return table


def datasets_table(datasets: list[Dataset]) -> Table:
    table = Table(title="datasets")
    for column in ("id", "name", "kind", "input", "classes", "train", "test", "size"):
        table.add_column(column, no_wrap=column == "id")
    for dataset in datasets:
        table.add_row(
            dataset.id,
            Text(dataset.name),
            dataset.kind,
            "x".join(str(d) for d in dataset.input_shape),
            str(dataset.num_classes),
            str(dataset.train_size) if dataset.train_size is not None else "-",
            str(dataset.test_size) if dataset.test_size is not None else "-",
            size(dataset.size_bytes),
        )
    return table
