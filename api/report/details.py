"""The report's details: accuracy against epsilon, each sanity check, the settings and the
reproducibility manifest."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from api.report.figures import epsilon_curves_svg
from api.report.formatting import (
    compact_json,
    image_count,
    is_number,
    key_values,
    setting_value,
    with_interval,
)
from api.report.intervals import epsilon_curve, epsilon_intervals


def by_epsilon_section(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    reports = {
        label: report
        for label, report in (("before", before), ("after", after))
        if report and report.get("accuracy_by_epsilon")
    }
    if not reports:
        return ""
    curves = {label: epsilon_curve(report) for label, report in reports.items()}
    bands = {label: epsilon_intervals(report) for label, report in reports.items()}
    epsilons = sorted({eps for curve in curves.values() for eps in curve})
    head = "<tr><th>epsilon</th>" + "".join(f"<th>{label}</th>" for label in curves) + "</tr>"
    lines = [
        f"<tr><td>{eps:g}</td>"
        + "".join(
            f"<td>{with_interval(curves[label].get(eps), bands[label].get(eps))}</td>"
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


def checks_section(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
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
            on = f" on {escape(image_count(used))} images:" if is_number(used) else ""
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


def settings_section(config: Mapping[str, Any]) -> str:
    groups = [
        ("threat model", config.get("threat_model")),
        ("hyperparameters", config.get("hyperparameters")),
        ("evaluation", config.get("evaluation")),
    ]
    blocks = "".join(
        f"<div><h3>{escape(name)}</h3>"
        + key_values([(str(key), setting_value(value)) for key, value in values.items()])
        + "</div>"
        for name, values in groups
        if isinstance(values, Mapping)
    )
    seed = escape(str(config.get("seed", "")))
    return (
        f'<section id="settings"><h2>Settings</h2><div class="columns">{blocks}</div>'
        f"<p>seed <code>{seed}</code></p></section>"
    )


def manifest_section(manifest: Mapping[str, Any]) -> str:
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
