"""The CLI's live output on stderr: a byte progress bar for transfers, and a job's progress
(phase, epoch, loss, robust accuracy, ETA) with a line per epoch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
from rich.text import Text

from cli.formatting import PHASES, duration, percent
from robustify import Event, Job, ProgressCallback


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
    above it; its `on_event` and `on_progress` go to `client.jobs.wait`."""

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
        epoch = progress.epoch if progress.epoch is not None else len(job.metrics.epochs)
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
