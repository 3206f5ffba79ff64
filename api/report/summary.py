"""The report's head: the job's summary, what is missing and why, the verdict and the
sanity checks' warnings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from html import escape
from typing import Any

from api.report.formatting import css_word, key_values, number, timestamp
from api.report.job import JobLike


def summary_section(job: JobLike, model_name: str | None, generated_at: datetime) -> str:
    model = escape(job.model_id or "(deleted)")
    if model_name:
        model = f"{escape(model_name)} <code>{model}</code>"
    verdict = (job.metrics or {}).get("verdict")
    # A succeeded job whose model is no better is not shown in success's green.
    status_class = css_word(job.status) if verdict in (None, "improved") else "degraded"
    rows = [
        ("status", f'<span class="status {status_class}">{escape(job.status)}</span>'),
        ("kind", escape(job.kind)),
        ("model", model),
        ("dataset", escape(job.dataset)),
        ("created", timestamp(job.created_at)),
        ("finished", timestamp(job.finished_at) if job.finished_at else "not yet"),
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
                f"{number(interpolation.get('fraction'))} of the way from the uploaded weights "
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
        rows.append(("peak learning rate", f"{number(peak_lr)} ({how})"))
    validation = (job.metrics or {}).get("validation")
    if isinstance(validation, Mapping):
        source = "held out of train" if validation.get("source") == "train_holdout" else "uploaded"
        rows.append(("validation split", f"{escape(str(validation.get('size')))} images, {source}"))
    return (
        f'<header><h1>Robustness report</h1><p class="job-id"><code>{escape(job.id)}</code>'
        f" &middot; generated {timestamp(generated_at)}</p></header>\n"
        f'<section id="summary">{key_values(rows)}</section>'
    )


def state_section(job: JobLike, history: list[Mapping[str, Any]]) -> str:
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


def verdict_section(metrics: Mapping[str, Any]) -> str:
    verdict = metrics.get("verdict")
    if verdict not in _VERDICT_BOXES:
        return ""
    kind, title, text = _VERDICT_BOXES[verdict]
    return (
        f'<section id="verdict" class="box {kind}"><h2>{escape(title)}</h2>'
        f"<p>{escape(text)}</p></section>"
    )


def warnings_section(
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
