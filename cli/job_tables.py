"""How the CLI shows jobs: the before/after accuracy table with its intervals, the list of
jobs, and one job's details."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from cli.formatting import (
    PHASES,
    details_grid,
    duration,
    percent,
    status_text,
    titled_table,
    when,
)
from robustify import Evaluation, Job


def accuracy_table(job: Job) -> Table | None:
    """The job's evaluation: before and after for a hardening job, one column for the other;
    each accuracy with its 95% interval on the images evaluated."""
    before, after = job.metrics.before, job.metrics.after
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
    final = job.metrics.after or job.metrics.before
    return final.warnings if final is not None else []


def jobs_table(jobs: list[Job]) -> Table:
    table = titled_table(
        "jobs",
        ("id", "kind", "status", "model", "dataset", "progress", "clean", "robust", "created"),
        no_wrap=("id", "model", "created"),
    )
    for job in jobs:
        final = job.metrics.after or job.metrics.before
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


def _progress_cell(job: Job) -> str:
    progress = job.progress
    if job.kind == "harden" and progress.epochs and job.status == "running":
        return f"epoch {progress.epoch or 0}/{progress.epochs} ({progress.fraction:.0%})"
    if job.status == "running":
        return PHASES.get(progress.phase or "", "running")
    return "-"


def job_details(job: Job, *, report_url: str) -> Table:
    metrics = job.metrics
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
    if metrics.peak_lr is not None:
        how = "chosen by the probe" if metrics.lr_probe else "as asked"
        optimizer = f", {metrics.optimizer}" if metrics.optimizer else ""
        rows.append(("peak lr", f"{metrics.peak_lr:.3g} ({how}{optimizer})"))
    if metrics.augmentation is not None:
        chosen = "as asked" if job.hyperparameters.get("augmentation") else "auto, by the data"
        rows.append(("augmentation", f"{metrics.augmentation} ({chosen})"))
    for decision in metrics.guards:
        rows.append(("guard", Text(str(decision.get("message", "")), style="yellow")))
    if metrics.interpolation is not None:
        rows.append(("interpolation", _interpolation(metrics.interpolation)))
    if metrics.best_epoch is not None:
        rows.append(("best epoch", str(metrics.best_epoch)))
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
    return details_grid(rows)


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
