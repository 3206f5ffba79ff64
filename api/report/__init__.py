"""A job's robustness report: one self-contained HTML file (inline CSS, plots as inline SVG, no
scripts, nothing fetched), rendered from the job's row, so the API, the CLI and the web page
show the same thing for a running, evaluated, hardened or failed job alike.

Each section is a function of the job's metrics in its own module: summary (the head, the
verdict, the warnings), evaluation (before and after, and what it means), training (epochs,
learning rate, guards, interpolation) and details (epsilon, checks, settings, manifest)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from api.report.details import (
    by_epsilon_section,
    checks_section,
    manifest_section,
    settings_section,
)
from api.report.evaluation import comparison_section, meaning_section, stages_section
from api.report.job import JobLike
from api.report.style import CSS
from api.report.summary import state_section, summary_section, verdict_section, warnings_section
from api.report.training import (
    guards_section,
    interpolation_section,
    learning_rate_section,
    training_section,
)

__all__ = ["JobLike", "render_report"]


def render_report(
    job: JobLike,
    *,
    epochs: Sequence[Mapping[str, Any]] | None = None,
    model_name: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The HTML report of `job`.

    `epochs` are the per-epoch metrics known so far (a running job's checkpoints); by default
    those the finished job recorded in `metrics["epochs"]`. Every text from the job is escaped.
    """
    metrics = job.metrics or {}
    history = list(epochs if epochs is not None else metrics.get("epochs") or [])
    before, after = metrics.get("before"), metrics.get("after")
    title = f"robustify report: {job.id}"
    sections = [
        summary_section(job, model_name, generated_at or datetime.now(UTC)),
        state_section(job, history),
        verdict_section(metrics),
        warnings_section(before, after, verdict=metrics.get("verdict")),
        comparison_section(before, after),
        meaning_section(before, after, kind=job.kind),
        stages_section(before, after),
        training_section(history, job, metrics.get("best_epoch")),
        learning_rate_section(metrics),
        guards_section(metrics),
        interpolation_section(metrics),
        by_epsilon_section(before, after),
        checks_section(before, after),
        settings_section(job.config or {}),
        manifest_section(job.manifest or {}),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
        f'<body><main class="report">\n{body}\n</main></body></html>\n'
    )
