"""The fine-tuning: epoch by epoch, the learning-rate probe, the guards' decisions and the
weight interpolation."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from api.report.figures import epoch_curves_svg
from api.report.formatting import number, percent, seconds
from api.report.job import JobLike


def training_section(history: list[Mapping[str, Any]], job: JobLike, best_epoch: int | None) -> str:
    if not history:
        if job.kind == "harden" and job.status in ("queued", "running"):
            return (
                '<section id="training"><h2>Training</h2>'
                "<p>No epoch has finished yet.</p></section>"
            )
        return ""
    head = (
        "<tr><th>epoch</th><th>train loss</th><th>lr</th><th>epsilon</th>"
        "<th>val clean</th><th>val robust</th><th>seconds</th></tr>"
    )
    lines = []
    for row in history:
        epoch = row.get("epoch")
        marker = ' class="best"' if best_epoch is not None and epoch == best_epoch else ""
        lines.append(
            f'<tr data-epoch="{escape(str(epoch))}"{marker}><td>{escape(str(epoch))}</td>'
            f"<td>{number(row.get('train_loss'), 4)}</td>"
            f"<td>{number(row.get('lr'), 5)}</td><td>{number(row.get('epsilon'))}</td>"
            f"<td>{percent(row.get('val_clean_accuracy'))}</td>"
            f"<td>{percent(row.get('val_robust_accuracy'))}</td>"
            f"<td>{seconds(row.get('seconds'))}</td></tr>"
        )
    return (
        '<section id="training"><h2>Training, epoch by epoch</h2>'
        f'<figure class="plot">{epoch_curves_svg(history, best_epoch=best_epoch)}'
        "<figcaption>Validation accuracy (clean, and under PGD at the threat's epsilon), training "
        "loss and learning rate per epoch"
        + ("; the dashed line marks the epoch handed back." if best_epoch else ".")
        + "</figcaption></figure>"
        f'<table class="numbers"><thead>{head}</thead><tbody>{"".join(lines)}</tbody></table>'
        "</section>"
    )


def learning_rate_section(metrics: Mapping[str, Any]) -> str:
    """The learning-rate probe: each rate tried, the one chosen, why, and what it cost."""
    probe = metrics.get("lr_probe")
    if not isinstance(probe, Mapping):
        return ""
    trials = [trial for trial in probe.get("trials") or [] if isinstance(trial, Mapping)]
    chosen = probe.get("chosen_lr")
    lines = []
    for trial in trials:
        marker = ' class="best"' if trial.get("lr") == chosen else ""
        kept = "diverged" if trial.get("diverged") else ("yes" if trial.get("kept_clean") else "no")
        lines.append(
            f"<tr{marker}><td>{number(trial.get('lr'))}</td>"
            f"<td>{percent(trial.get('val_clean_accuracy'))}</td>"
            f"<td>{percent(trial.get('val_robust_accuracy'))}</td><td>{kept}</td></tr>"
        )
    table = (
        '<table class="numbers"><thead><tr><th>peak rate</th><th>val clean</th>'
        "<th>val robust</th><th>kept clean accuracy</th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>"
        if lines
        else ""
    )
    cost = (
        f"Each rate trained {escape(str(probe.get('steps_per_trial')))} steps from the uploaded "
        f"weights and was scored on {escape(str(probe.get('eval_samples')))} validation images; "
        f"the probe cost {escape(str(probe.get('gradient_passes')))} batch passes, "
        f"{percent(probe.get('budget_fraction'))} of the training's, in "
        f"{seconds(probe.get('seconds'))} s."
    )
    return (
        '<section id="learning-rate"><h2>Learning-rate probe</h2>'
        f"<p>Peak learning rate <strong>{number(chosen)}</strong>: "
        f"{escape(str(probe.get('reason', '')))}.</p>{table}<p>{cost}</p></section>"
    )


def guards_section(metrics: Mapping[str, Any]) -> str:
    """The guards' decisions while training (a step back, or the early stop)."""
    decisions = [d for d in metrics.get("guards") or [] if isinstance(d, Mapping)]
    if not decisions:
        return ""
    items = "".join(
        f"<li>epoch {escape(str(d.get('epoch')))}, step {escape(str(d.get('step')))}: "
        f"{escape(str(d.get('message', '')))}</li>"
        for d in decisions
    )
    stopped = "<p>The guards stopped training early.</p>" if metrics.get("stopped_early") else ""
    return (
        '<section id="guards" class="box warning"><h2>Guards while training</h2>'
        f"<ul>{items}</ul>{stopped}</section>"
    )


def interpolation_section(metrics: Mapping[str, Any]) -> str:
    """The search along the line from the uploaded weights to the best epoch's, made when no
    epoch kept clean accuracy: each mix tried, and the one handed back."""
    interpolation = metrics.get("interpolation")
    if not isinstance(interpolation, Mapping):
        return ""
    fraction, epoch = interpolation.get("fraction"), escape(str(interpolation.get("from_epoch")))
    trials = [trial for trial in interpolation.get("trials") or [] if isinstance(trial, Mapping)]
    lines = []
    for trial in trials:
        marker = (
            ' class="best"' if fraction is not None and trial.get("fraction") == fraction else ""
        )
        lines.append(
            f"<tr{marker}><td>{number(trial.get('fraction'))}</td>"
            f"<td>{percent(trial.get('val_clean_accuracy'))}</td>"
            f"<td>{percent(trial.get('val_robust_accuracy'))}</td>"
            f"<td>{'yes' if trial.get('kept_clean') else 'no'}</td></tr>"
        )
    table = (
        '<table class="numbers"><thead><tr><th>fraction</th><th>val clean</th>'
        "<th>val robust</th><th>kept clean accuracy</th></tr></thead>"
        f"<tbody>{''.join(lines)}</tbody></table>"
        if lines
        else ""
    )
    handed_back = (
        f"Handed back <strong>{number(fraction)}</strong> of the way from the uploaded weights "
        f"to epoch {epoch}'s"
        if fraction is not None
        else f"No mix kept clean accuracy: epoch {epoch}'s weights were handed back"
    )
    kind = "note" if fraction is not None else "warning"
    return (
        f'<section id="interpolation" class="box {kind}"><h2>Weight interpolation</h2>'
        f"<p>No epoch kept validation clean accuracy within max_clean_drop of the uploaded "
        f"model's, so the line between the uploaded weights (fraction 0) and epoch {epoch}'s "
        "(fraction 1) was searched by bisection; the most robust mix that kept it won. "
        f"{handed_back} (validation clean {percent(interpolation.get('val_clean_accuracy'))}, "
        f"robust {percent(interpolation.get('val_robust_accuracy'))}).</p>{table}</section>"
    )
