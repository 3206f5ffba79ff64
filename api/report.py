"""A job's robustness report: one self-contained HTML file (inline CSS, plots as inline SVG, no
scripts, nothing fetched), rendered from the job's row, so the API, the CLI and the web page
show the same thing for a running, evaluated, hardened or failed job alike."""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any, Protocol

from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.service.jobs.verdict import robust_noise, wilson_half_width, wilson_interval

BEFORE_COLOR, AFTER_COLOR = "#8a8f98", "#1f6feb"
CLEAN_COLOR, ROBUST_COLOR = "#2da44e", "#cf222e"

# rcParams are one global dict: the few settings the plots need are set under this lock.
_PLOT_LOCK = threading.Lock()


class JobLike(Protocol):
    """What the report reads of a job: core.service.tables.Job, or anything shaped like it."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def model_id(self) -> str | None: ...
    @property
    def dataset(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def progress(self) -> dict[str, Any]: ...
    @property
    def metrics(self) -> dict[str, Any]: ...
    @property
    def manifest(self) -> dict[str, Any]: ...
    @property
    def error(self) -> dict[str, Any] | None: ...
    @property
    def result_model_id(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...


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
        _summary(job, model_name, generated_at or datetime.now(UTC)),
        _state(job, history),
        _verdict(metrics),
        _warnings(before, after, verdict=metrics.get("verdict")),
        _comparison(before, after),
        _meaning(before, after, kind=job.kind),
        _stages(before, after),
        _training(history, job, metrics.get("best_epoch")),
        _learning_rate(metrics),
        _guards(metrics),
        _interpolation(metrics),
        _by_epsilon(before, after),
        _checks(before, after),
        _settings(job.config or {}),
        _manifest(job.manifest or {}),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
        f'<body><main class="report">\n{body}\n</main></body></html>\n'
    )


# -- sections -------------------------------------------------------------------------------


def _summary(job: JobLike, model_name: str | None, generated_at: datetime) -> str:
    model = escape(job.model_id or "(deleted)")
    if model_name:
        model = f"{escape(model_name)} <code>{model}</code>"
    verdict = (job.metrics or {}).get("verdict")
    # A succeeded job whose model is no better is not shown in success's green.
    status_class = _css_word(job.status) if verdict in (None, "improved") else "degraded"
    rows = [
        ("status", f'<span class="status {status_class}">{escape(job.status)}</span>'),
        ("kind", escape(job.kind)),
        ("model", model),
        ("dataset", escape(job.dataset)),
        ("created", _time(job.created_at)),
        ("finished", _time(job.finished_at) if job.finished_at else "not yet"),
    ]
    if job.result_model_id:
        rows.append(("hardened model", f"<code>{escape(job.result_model_id)}</code>"))
    if verdict is not None:
        rows.append(("verdict", f"<strong>{escape(str(verdict))}</strong>"))
    best = (job.metrics or {}).get("best_epoch")
    if best is not None:
        choice = (job.metrics or {}).get("best_epoch_choice") or {}
        why = (
            "no epoch kept validation clean accuracy within max_clean_drop: the most robust one"
            if choice.get("meets_clean_constraint") is False
            else "best validation robust accuracy among the epochs that kept clean accuracy"
        )
        if best == 0:
            why = "every epoch collapsed: the guards handed back the uploaded weights"
        handed_back = f"epoch {escape(str(best))} ({why})"
        interpolation = (job.metrics or {}).get("interpolation")
        if isinstance(interpolation, Mapping) and interpolation.get("fraction") is not None:
            handed_back = (
                f"{_number(interpolation.get('fraction'))} of the way from the uploaded weights "
                f"to epoch {escape(str(interpolation.get('from_epoch')))}'s (no epoch kept "
                "validation clean accuracy within max_clean_drop; this mix does)"
            )
        rows.append(("model handed back", handed_back))
    peak_lr = (job.metrics or {}).get("peak_lr")
    if isinstance(peak_lr, int | float):
        how = "chosen by the probe" if (job.metrics or {}).get("lr_probe") else "as asked"
        optimizer = (job.metrics or {}).get("optimizer")
        if isinstance(optimizer, str):
            how += f", {escape(optimizer)}"
        rows.append(("peak learning rate", f"{_number(peak_lr)} ({how})"))
    validation = (job.metrics or {}).get("validation")
    if isinstance(validation, Mapping):
        source = "held out of train" if validation.get("source") == "train_holdout" else "uploaded"
        rows.append(("validation split", f"{escape(str(validation.get('size')))} images, {source}"))
    return (
        f'<header><h1>Robustness report</h1><p class="job-id"><code>{escape(job.id)}</code>'
        f" &middot; generated {_time(generated_at)}</p></header>\n"
        f'<section id="summary">{_key_values(rows)}</section>'
    )


def _state(job: JobLike, history: list[Mapping[str, Any]]) -> str:
    """What is missing and why: still running, failed, cancelled."""
    if job.error:
        code = escape(str(job.error.get("code", "error")))
        message = escape(str(job.error.get("message", "")))
        return (
            f'<section id="error" class="box error"><h2>The job {escape(job.status)}</h2>'
            f"<p><code>{code}</code>: {message}</p>"
            + (
                f"<p>{len(history)} finished epoch(s) are shown below; their checkpoints stay "
                "downloadable.</p>"
                if history
                else ""
            )
            + "</section>"
        )
    if job.status in ("queued", "running"):
        progress = job.progress or {}
        where = escape(str(progress.get("phase", job.status)).replace("_", " "))
        if progress.get("epochs"):
            epoch, total = escape(str(progress.get("epoch", 0))), escape(str(progress["epochs"]))
            where += f", epoch {epoch} of {total}"
        return (
            f'<section id="in-progress" class="box note"><h2>This job is {escape(job.status)}</h2>'
            f"<p>Now: {where}. This report shows what is known so far; ask again when the job "
            "has ended for the final evaluation.</p></section>"
        )
    return ""


_VERDICT_BOXES = {
    "improved": (
        "ok",
        "Verdict: improved",
        "Test robust accuracy rose by more than its noise (the two 95% Wilson intervals' "
        "half-widths together) and clean accuracy stayed within max_clean_drop.",
    ),
    "clean_dropped": (
        "error",
        "Verdict: clean accuracy dropped",
        "Test clean accuracy fell by more than max_clean_drop: the model handed back is worse "
        "on clean images than the uploaded one. Lower peak_lr, or train for fewer epochs.",
    ),
    "not_improved": (
        "warning",
        "Verdict: not improved",
        "Test robust accuracy did not rise beyond its noise: the model handed back is no more "
        "robust than the uploaded one, as far as this evaluation can tell.",
    ),
}


def _verdict(metrics: Mapping[str, Any]) -> str:
    verdict = metrics.get("verdict")
    if verdict not in _VERDICT_BOXES:
        return ""
    kind, title, text = _VERDICT_BOXES[verdict]
    return (
        f'<section id="verdict" class="box {kind}"><h2>{escape(title)}</h2>'
        f"<p>{escape(text)}</p></section>"
    )


def _warnings(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    *,
    verdict: str | None = None,
) -> str:
    failed = [
        (label, check)
        for label, report in (("before", before), ("after", after))
        if report
        for check in report.get("checks") or []
        if not check.get("passed", True)
    ]
    if not failed:
        if before or after:
            # Green only over a model that improved: passing checks say the numbers can be
            # trusted, not that they are good.
            kind = "ok" if verdict in (None, "improved") else "note"
            return (
                f'<section id="warnings" class="box {kind}"><h2>Sanity checks</h2><p>Every '
                "sanity check of the evaluation passed: no sign of gradient masking.</p></section>"
            )
        return ""
    items = "".join(
        f"<li><strong>{escape(label)}: {escape(str(check.get('name')))}</strong> failed "
        f"({escape(str(check.get('detail', '')))})</li>"
        for label, check in failed
    )
    return (
        '<section id="warnings" class="box warning"><h2>Warnings: possible gradient masking</h2>'
        "<p>These checks of the evaluation (Carlini et al. 2019) failed. The attack, not the "
        "model, may have failed: the robust accuracy may be overstated.</p>"
        f"<ul>{items}</ul></section>"
    )


def _comparison(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    reports = [report for report in (before, after) if report]
    if not reports:
        return ""
    first, final = reports[0], reports[-1]
    threat = first.get("threat") or {}
    epsilon = _number(threat.get("epsilon"))
    norm = escape(str(threat.get("norm", "")))
    steps = escape(str(first.get("attack_steps", "?")))
    restarts = first.get("restarts", 1)
    at = f"({norm}, eps {epsilon})"
    pgd = (
        f"PGD-{steps} ({norm}, eps {epsilon}"
        + (f", {escape(str(restarts))} restarts" if restarts and restarts > 1 else "")
        + ")"
    )
    rows: list[tuple[str, str]] = [
        ("clean", "clean_accuracy"),
        (f"FGSM {at}", "fgsm_accuracy"),
    ]
    if final.get("attack") in (None, "fast"):  # the headline is PGD (reports of older jobs too)
        rows.append((pgd, "robust_accuracy"))
    else:
        rows.append((pgd, "pgd_accuracy"))
        rows.append(
            (f"<strong>{escape(_headline_attacks(final))}</strong> {at}", "robust_accuracy")
        )
    # Older jobs ran AutoAttack beside PGD; the autoattack preset makes it the headline.
    if final.get("attack") is None and any(
        report.get("autoattack_accuracy") is not None for report in reports
    ):
        rows.append((f"AutoAttack {at}", "autoattack_accuracy"))
    head = "<tr><th>accuracy</th><th>before</th>" + (
        "<th>after</th><th>change</th></tr>" if after else "</tr>"
    )
    lines = []
    for label, key in rows:
        cells = f"<td>{_measured(before, key)}</td>"
        if after:
            cells += f"<td>{_measured(after, key)}</td><td>{_change(before, after, key)}</td>"
        lines.append(f'<tr data-metric="{key}"><th scope="row">{label}</th>{cells}</tr>')
    count = escape(_count(first.get("num_samples")))
    seed = escape(str(first.get("seed", "?")))
    return (
        '<section id="before-after"><h2>Before and after</h2>'
        f'<table class="numbers"><thead>{head}</thead><tbody>{"".join(lines)}</tbody></table>'
        f'<p class="caption">On a fixed subset of {count} test images (seed {seed}); '
        "the same images before and after. In brackets, each accuracy's 95% confidence "
        "interval (Wilson) on those images.</p></section>"
    )


def _headline_attacks(report: Mapping[str, Any]) -> str:
    """What the headline robust accuracy is the worst case of: the ensemble's attacks."""
    attack = report.get("attack")
    names = [str(stage.get("name")) for stage in _stage_list(report)]
    if not names:  # no stages stored: the preset's attacks (older jobs: PGD alone)
        names = [f"PGD-{report.get('attack_steps', '?')}"]
        names += {"standard": ["APGD-CE", "APGD-T"], "autoattack": ["AutoAttack"]}.get(
            str(attack), []
        )
    return names[0] if len(names) == 1 else "worst of " + ", ".join(names)


def _stage_list(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [stage for stage in report.get("stages") or [] if isinstance(stage, Mapping)]


def _stages(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    """The ensemble's attacks in order, each on the examples every earlier one left."""
    reports = {
        label: report
        for label, report in (("before", before), ("after", after))
        if report and _stage_list(report)
    }
    if not reports:
        return ""
    names: list[str] = []
    for report in reports.values():
        for stage in _stage_list(report):
            if str(stage.get("name")) not in names:
                names.append(str(stage.get("name")))
    two = len(reports) > 1
    head = "<tr><th>attack</th>" + "".join(
        f"<th>attacked{f' ({label})' if two else ''}</th>"
        f"<th>robust after it{f' ({label})' if two else ''}</th>"
        f"<th>seconds{f' ({label})' if two else ''}</th>"
        for label in reports
    )
    lines = []
    for name in names:
        cells = ""
        for report in reports.values():
            by_name = {str(stage.get("name")): stage for stage in _stage_list(report)}
            found = by_name.get(name)
            if found is None:
                cells += "<td></td><td></td><td></td>"
                continue
            cells += (
                f"<td>{escape(_count(found.get('attacked')))}</td>"
                f"<td>{_percent(found.get('robust_accuracy'))}</td>"
                f"<td>{_seconds(found.get('seconds'))}</td>"
            )
        lines.append(
            f'<tr data-stage="{escape(name)}"><th scope="row">{escape(name)}</th>{cells}</tr>'
        )
    final = after or before or {}
    return (
        '<section id="stages"><h2>How the robust accuracy was found</h2>'
        f"<p>The headline robust accuracy is the per-example worst case over these attacks "
        f"(the <code>{escape(str(final.get('attack', '')))}</code> preset), run in this order. "
        "Each attack ran only on the test images that every earlier one had failed to fool "
        "(attacked), so a later attack costs little once most images have fallen; the robust "
        "accuracy after each is cumulative, and the last one is the headline.</p>"
        f'<table class="numbers"><thead>{head}</tr></thead><tbody>{"".join(lines)}</tbody>'
        "</table></section>"
    )


def _meaning(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *, kind: str
) -> str:
    """In words: what the headline numbers mean and how far to trust them."""
    final = after or before
    if not final or not _is_number(final.get("robust_accuracy")):
        return ""
    samples = final.get("num_samples")
    count = _count(samples)
    threat = final.get("threat") or {}
    where = f"{threat.get('norm', '')} epsilon {_plain_number(threat.get('epsilon'))}"
    which = "after hardening " if after else ""
    paragraphs = [
        f"Robust accuracy {which}<strong>{_plain_percent(final['robust_accuracy'])}</strong> "
        f"on {escape(count)} test images{_trust(final, 'robust_accuracy')}. "
        "It is an upper bound on the true robust accuracy: it counts the images that none of "
        f"the attacks tried ({escape(_headline_attacks(final).removeprefix('worst of '))}) "
        f"could fool within {escape(where)}, and a stronger attack may fool more.",
    ]
    if final.get("attack") is None and _is_number(final.get("autoattack_accuracy")):
        # Older jobs ran AutoAttack beside the PGD headline: the lower figure is the tighter bound.
        paragraphs.append(
            f"AutoAttack, run beside it, left {_plain_percent(final['autoattack_accuracy'])}"
            f"{_trust(final, 'autoattack_accuracy')}; the lower of the two is the tighter bound."
        )
    if _is_number(final.get("clean_accuracy")):
        paragraphs.append(
            f"Clean accuracy {which}{_plain_percent(final['clean_accuracy'])} on the same "
            f"images{_trust(final, 'clean_accuracy')}."
        )
    if isinstance(samples, int) and samples > 0:
        spread = wilson_half_width(0.5, samples) * 100
        paragraphs.append(
            "The intervals say how far another draw of as many test images could move each "
            f"figure: about &plusmn;{spread:.1f} points at 50% on {escape(count)} images, half "
            "as much on four times as many (max_samples). They cover only this sampling "
            "noise: not a shift between this test set and the images the model will meet, "
            "and not the attack's own weakness, which only makes robust accuracy look higher."
        )
    if any(
        not check.get("passed", True)
        for report in (before, after)
        if report
        for check in report.get("checks") or []
        if isinstance(check, Mapping)
    ):
        paragraphs.append(
            "<strong>A sanity check failed</strong> (see the warnings above): the attacks may "
            "have been blunted by gradient masking, and the robust accuracy may lie well above "
            "the truth, whatever its interval says."
        )
    if kind == "harden" and before and after:
        paragraphs.append(_difference(before, after))
    items = "".join(f"<p>{paragraph}</p>" for paragraph in paragraphs if paragraph)
    return f'<section id="meaning"><h2>What these numbers mean</h2>{items}</section>'


def _trust(report: Mapping[str, Any], key: str) -> str:
    bounds = _interval(report, key)
    if bounds is None:
        return ""
    return (
        ": with 95% confidence the true value on this test distribution lies between "
        f"{_plain_percent(bounds[0])} and {_plain_percent(bounds[1])}"
    )


def _difference(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """The before/after change of robust accuracy against the noise the verdict allows."""
    needed = ("robust_accuracy", "num_samples")
    if not all(_is_number(report.get(key)) for report in (before, after) for key in needed):
        return ""
    rise = (float(after["robust_accuracy"]) - float(before["robust_accuracy"])) * 100
    noise = robust_noise(before, after) * 100
    outcome = (
        "beyond it: the gain is not a coin flip of the test draw"
        if rise > noise
        else "within it: this evaluation cannot tell the two models apart on robustness"
    )
    return (
        f"Robust accuracy went from {_plain_percent(before['robust_accuracy'])} to "
        f"{_plain_percent(after['robust_accuracy'])} ({rise:+.1f} points). The verdict counts "
        "a rise as real only past the two intervals' half-widths added, "
        f"&plusmn;{noise:.1f} points here; this change is {outcome}. The test is conservative: "
        "both figures come from the same images, so the true noise of their difference is "
        "smaller, and a real gain smaller than this may go unrecognised."
    )


def _change(before: Mapping[str, Any] | None, after: Mapping[str, Any], key: str) -> str:
    old, new = (before or {}).get(key), after.get(key)
    if not isinstance(old, int | float) or not isinstance(new, int | float):
        return ""
    points = (new - old) * 100
    kind = "up" if points > 0.05 else "down" if points < -0.05 else "same"
    return f'<span class="{kind}">{points:+.1f} pts</span>'


def _training(history: list[Mapping[str, Any]], job: JobLike, best_epoch: int | None) -> str:
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
            f"<td>{_number(row.get('train_loss'), 4)}</td>"
            f"<td>{_number(row.get('lr'), 5)}</td><td>{_number(row.get('epsilon'))}</td>"
            f"<td>{_percent(row.get('val_clean_accuracy'))}</td>"
            f"<td>{_percent(row.get('val_robust_accuracy'))}</td>"
            f"<td>{_seconds(row.get('seconds'))}</td></tr>"
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


def _learning_rate(metrics: Mapping[str, Any]) -> str:
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
            f"<tr{marker}><td>{_number(trial.get('lr'))}</td>"
            f"<td>{_percent(trial.get('val_clean_accuracy'))}</td>"
            f"<td>{_percent(trial.get('val_robust_accuracy'))}</td><td>{kept}</td></tr>"
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
        f"{_percent(probe.get('budget_fraction'))} of the training's, in "
        f"{_seconds(probe.get('seconds'))} s."
    )
    return (
        '<section id="learning-rate"><h2>Learning-rate probe</h2>'
        f"<p>Peak learning rate <strong>{_number(chosen)}</strong>: "
        f"{escape(str(probe.get('reason', '')))}.</p>{table}<p>{cost}</p></section>"
    )


def _guards(metrics: Mapping[str, Any]) -> str:
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


def _interpolation(metrics: Mapping[str, Any]) -> str:
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
            f"<tr{marker}><td>{_number(trial.get('fraction'))}</td>"
            f"<td>{_percent(trial.get('val_clean_accuracy'))}</td>"
            f"<td>{_percent(trial.get('val_robust_accuracy'))}</td>"
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
        f"Handed back <strong>{_number(fraction)}</strong> of the way from the uploaded weights "
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
        f"{handed_back} (validation clean {_percent(interpolation.get('val_clean_accuracy'))}, "
        f"robust {_percent(interpolation.get('val_robust_accuracy'))}).</p>{table}</section>"
    )


def _by_epsilon(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    reports = {
        label: report
        for label, report in (("before", before), ("after", after))
        if report and report.get("accuracy_by_epsilon")
    }
    if not reports:
        return ""
    curves = {label: _epsilon_curve(report) for label, report in reports.items()}
    bands = {label: _epsilon_intervals(report) for label, report in reports.items()}
    epsilons = sorted({eps for curve in curves.values() for eps in curve})
    head = "<tr><th>epsilon</th>" + "".join(f"<th>{label}</th>" for label in curves) + "</tr>"
    lines = [
        f"<tr><td>{eps:g}</td>"
        + "".join(
            f"<td>{_with_interval(curves[label].get(eps), bands[label].get(eps))}</td>"
            for label in curves
        )
        + "</tr>"
        for eps in epsilons
    ]
    reference = before or after or {}
    steps = escape(str(reference.get("attack_steps", "?")))
    norm = escape(str((reference.get("threat") or {}).get("norm", "")))
    return (
        '<section id="by-epsilon"><h2>Accuracy against epsilon</h2>'
        f'<figure class="plot">{epsilon_curves_svg(curves, intervals=bands)}'
        f"<figcaption>PGD-{steps} accuracy within {norm} balls of growing radius "
        "(epsilon 0 is clean accuracy); the shaded bands and the bracketed figures are 95% "
        "confidence intervals.</figcaption></figure>"
        f'<table class="numbers"><thead>{head}</thead><tbody>{"".join(lines)}</tbody></table>'
        "</section>"
    )


def _checks(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    reports = {label: report for label, report in (("before", before), ("after", after)) if report}
    names: list[str] = []
    for report in reports.values():
        for check in report.get("checks") or []:
            if check.get("name") not in names:
                names.append(str(check.get("name")))
    if not names:
        return ""
    head = "<tr><th>check</th>" + "".join(f"<th>{label}</th>" for label in reports) + "</tr>"
    lines = []
    for name in names:
        cells = ""
        for report in reports.values():
            check = next((c for c in report.get("checks") or [] if c.get("name") == name), None)
            if check is None:
                cells += "<td></td>"
                continue
            verdict = "passed" if check.get("passed") else "FAILED"
            used = check.get("num_samples")
            on = f" on {escape(_count(used))} images:" if _is_number(used) else ""
            cells += (
                f'<td class="{verdict.lower()}"><strong>{verdict}</strong>{on} '
                f"{escape(str(check.get('detail', '')))}</td>"
            )
        lines.append(f'<tr><th scope="row">{escape(name.replace("_", " "))}</th>{cells}</tr>')
    return (
        '<section id="checks"><h2>Sanity checks of the evaluation</h2>'
        f'<table class="checks"><thead>{head}</thead><tbody>{"".join(lines)}</tbody></table>'
        "</section>"
    )


def _settings(config: Mapping[str, Any]) -> str:
    groups = [
        ("threat model", config.get("threat_model")),
        ("hyperparameters", config.get("hyperparameters")),
        ("evaluation", config.get("evaluation")),
    ]
    blocks = "".join(
        f"<div><h3>{escape(name)}</h3>"
        + _key_values([(str(key), _value(value)) for key, value in values.items()])
        + "</div>"
        for name, values in groups
        if isinstance(values, Mapping)
    )
    seed = escape(str(config.get("seed", "")))
    return (
        f'<section id="settings"><h2>Settings</h2><div class="columns">{blocks}</div>'
        f"<p>seed <code>{seed}</code></p></section>"
    )


def _manifest(manifest: Mapping[str, Any]) -> str:
    if not manifest:
        return (
            '<section id="manifest"><h2>Reproducibility manifest</h2>'
            "<p>Written when the job succeeds.</p></section>"
        )
    return (
        '<section id="manifest"><h2>Reproducibility manifest</h2>'
        "<p>Seed, versions, device, the full configuration, the inputs' and outputs' sha256 "
        "and the evaluation subset: what it takes to run this job again.</p>"
        f"<pre>{escape(compact_json(manifest))}</pre></section>"
    )


# -- plots ----------------------------------------------------------------------------------


def epoch_curves_svg(history: Sequence[Mapping[str, Any]], *, best_epoch: int | None) -> str:
    """Three panels: validation accuracy (clean, robust), training loss, learning rate."""
    epochs = [row.get("epoch") for row in history]
    figure = _figure(width=9.6, height=3.0)
    accuracy, loss, rate = figure.subplots(1, 3)
    for key, label, color in (
        ("val_clean_accuracy", "val clean", CLEAN_COLOR),
        ("val_robust_accuracy", "val robust", ROBUST_COLOR),
    ):
        accuracy.plot(epochs, _series(history, key), marker="o", label=label, color=color)
    accuracy.set(title="validation accuracy", xlabel="epoch", ylim=(-0.02, 1.02))
    accuracy.legend(loc="best", fontsize=8)
    loss.plot(epochs, _series(history, "train_loss"), marker="o", color="#6e40c9")
    loss.set(title="training loss", xlabel="epoch")
    rate.plot(epochs, _series(history, "lr"), marker="o", color="#bc4c00")
    rate.set(title="learning rate (end of epoch)", xlabel="epoch")
    for axes in (accuracy, loss, rate):
        axes.grid(alpha=0.3)
        axes.xaxis.get_major_locator().set_params(integer=True)
        if best_epoch is not None:
            axes.axvline(best_epoch, color="#57606a", linestyle="--", linewidth=1)
    return _svg(figure, "epochs")


def epsilon_curves_svg(
    curves: Mapping[str, Mapping[float, float]],
    *,
    intervals: Mapping[str, Mapping[float, tuple[float, float]]] | None = None,
) -> str:
    """Accuracy against the attack's radius, one line per evaluation (before, after), each in
    a band of its 95% intervals where `intervals` has them."""
    figure = _figure(width=5.6, height=3.2)
    axes = figure.subplots()
    colors = {"before": BEFORE_COLOR, "after": AFTER_COLOR}
    for label, curve in curves.items():
        points = sorted(curve.items())
        axes.plot(
            [eps for eps, _ in points],
            [acc for _, acc in points],
            marker="o",
            label=label,
            color=colors.get(label),
        )
        band = (intervals or {}).get(label) or {}
        shaded = [(eps, band[eps]) for eps, _ in points if eps in band]
        if shaded:
            axes.fill_between(
                [eps for eps, _ in shaded],
                [low for _, (low, _high) in shaded],
                [high for _, (_low, high) in shaded],
                color=colors.get(label),
                alpha=0.15,
                linewidth=0,
            )
    axes.set(xlabel="epsilon", ylabel="accuracy", ylim=(-0.02, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    return _svg(figure, "epsilon")


def _figure(*, width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas, set here: no GUI backend, no global pyplot state
    return figure


def _svg(figure: Figure, name: str) -> str:
    buffer = io.StringIO()
    # Text as text (no glyph definitions) and ids salted by plot, so that several SVGs can
    # share one HTML document without clashing ids.
    with _PLOT_LOCK, rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    values = []
    for row in history:
        value = row.get(key)
        values.append(float(value) if isinstance(value, int | float) else math.nan)
    return values


def _epsilon_curve(report: Mapping[str, Any]) -> dict[float, float]:
    curve = {}
    for eps, acc in (report.get("accuracy_by_epsilon") or {}).items():
        try:
            curve[float(eps)] = float(acc)
        except (TypeError, ValueError):
            continue
    return curve


# -- confidence intervals: the report's own, or (reports of older jobs) computed here ---------


def _interval(report: Mapping[str, Any] | None, key: str) -> tuple[float, float] | None:
    """`key`'s 95% interval: the one the report stores, else the Wilson interval of its
    accuracy on num_samples (reports stored before intervals were); None without either."""
    if not report:
        return None
    stored = report.get("confidence_intervals")
    kept = _bounds(stored.get(key)) if isinstance(stored, Mapping) else None
    return kept or _computed(report.get(key), report.get("num_samples"))


def _epsilon_intervals(report: Mapping[str, Any]) -> dict[float, tuple[float, float]]:
    stored = report.get("confidence_intervals")
    by_epsilon = stored.get("accuracy_by_epsilon") if isinstance(stored, Mapping) else None
    kept: dict[float, tuple[float, float]] = {}
    for eps, value in (by_epsilon if isinstance(by_epsilon, Mapping) else {}).items():
        bounds = _bounds(value)
        if bounds is not None and _is_float(eps):
            kept[float(eps)] = bounds
    samples = report.get("num_samples")
    return {
        eps: found
        for eps, accuracy in _epsilon_curve(report).items()
        if (found := kept.get(eps) or _computed(accuracy, samples)) is not None
    }


def _bounds(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value)):
        return float(value[0]), float(value[1])
    return None


def _computed(accuracy: Any, samples: Any) -> tuple[float, float] | None:
    if not _is_number(accuracy) or not _is_number(samples) or samples <= 0:
        return None
    return wilson_interval(float(accuracy), int(samples))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_float(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


# -- formatting -----------------------------------------------------------------------------


def compact_json(value: Any, indent: int = 0) -> str:
    """JSON with objects one key a line and lists of plain values on one line (the evaluation
    subset's hundreds of indices stay readable)."""
    pad = "  " * indent
    if isinstance(value, Mapping) and value:
        items = [
            f"{pad}  {json.dumps(str(key))}: {compact_json(item, indent + 1)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(item, Mapping | list) for item in value):
        items = [f"{pad}  {compact_json(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, default=str)


def _key_values(rows: Sequence[tuple[str, str]]) -> str:
    """Rows of (label, already-escaped HTML) as a definition list; labels are escaped here."""
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def _value(value: Any) -> str:
    if value is None:
        return '<span class="muted">default</span>'
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return escape(json.dumps(value))
    return escape(str(value))


def _measured(report: Mapping[str, Any] | None, key: str) -> str:
    """An accuracy of `report` with its 95% interval, as HTML."""
    return _with_interval((report or {}).get(key), _interval(report, key))


def _with_interval(value: Any, bounds: tuple[float, float] | None) -> str:
    if bounds is None or not _is_number(value):
        return _percent(value)
    low, high = bounds
    return (
        f'{_percent(value)} <span class="interval">[{low * 100:.1f}&ndash;{high * 100:.1f}]</span>'
    )


def _plain_percent(value: Any) -> str:
    return f"{float(value) * 100:.1f}%" if _is_number(value) else "?"


def _plain_number(value: Any) -> str:
    return f"{float(value):.3g}" if _is_number(value) else "?"


def _count(value: Any) -> str:
    """1,000: a number of images."""
    return f"{int(value):,}" if _is_number(value) else "?"


def _percent(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return '<span class="muted">&ndash;</span>'
    return f"{value * 100:.1f}%"


def _number(value: Any, digits: int = 3) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return '<span class="muted">&ndash;</span>'
    return f"{value:.{digits}g}"


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return '<span class="muted">&ndash;</span>'
    return f"{value:.1f}"


def _time(value: datetime) -> str:
    return escape(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def _css_word(text: str) -> str:
    return "".join(char for char in text.lower() if char.isalnum() or char == "-")


_CSS = """
:root { color-scheme: light; --muted: #57606a; --line: #d0d7de; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
.report { max-width: 1000px; margin: 0 auto; padding: 24px; background: #fff; }
h1 { margin: 0; font-size: 24px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 14px; margin: 8px 0 4px; color: var(--muted); }
.job-id { margin: 2px 0 12px; color: var(--muted); }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: 12px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { padding: 4px 12px; border-bottom: 1px solid var(--line); text-align: left; }
table.numbers td { text-align: right; font-variant-numeric: tabular-nums; }
thead th { border-bottom: 2px solid var(--line); }
tr.best td { background: #ddf4ff; }
.caption, figcaption { color: var(--muted); font-size: 12px; }
figure.plot { margin: 8px 0; } figure.plot svg { max-width: 100%; height: auto; }
.columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
.box { border: 1px solid; border-radius: 6px; padding: 4px 16px; margin: 16px 0; }
.box h2 { margin-top: 8px; }
.warning { background: #fff8c5; border-color: #d4a72c; }
.error { background: #ffebe9; border-color: #ff8182; }
.note { background: #ddf4ff; border-color: #54aeff; }
.ok { background: #dafbe1; border-color: #4ac26b; }
.status { padding: 1px 8px; border-radius: 10px; background: #eaeef2; font-weight: 600; }
.status.succeeded { background: #dafbe1; } .status.failed { background: #ffebe9; }
.status.running { background: #ddf4ff; } .status.cancelled { background: #fff8c5; }
.status.degraded { background: #ffebe9; }
.up { color: #1a7f37; } .down { color: #cf222e; } .muted, .same { color: var(--muted); }
td.failed { color: #9a6700; } td.passed strong { color: #1a7f37; }
.interval { color: var(--muted); font-size: 12px; white-space: nowrap; }
"""
