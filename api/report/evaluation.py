"""The evaluation before and after: the accuracies side by side, the ensemble's attacks,
and in words what the numbers mean and how far to trust them."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from api.report.formatting import (
    image_count,
    is_number,
    number,
    percent,
    plain_number,
    plain_percent,
    seconds,
)
from api.report.intervals import confidence_interval, measured
from core.service.jobs.verdict import robust_noise, wilson_half_width


def comparison_section(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    reports = [report for report in (before, after) if report]
    if not reports:
        return ""
    first, final = reports[0], reports[-1]
    threat = first.get("threat") or {}
    epsilon = number(threat.get("epsilon"))
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
        cells = f"<td>{measured(before, key)}</td>"
        if after:
            cells += f"<td>{measured(after, key)}</td><td>{_change(before, after, key)}</td>"
        lines.append(f'<tr data-metric="{key}"><th scope="row">{label}</th>{cells}</tr>')
    count = escape(image_count(first.get("num_samples")))
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


def stages_section(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
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
                f"<td>{escape(image_count(found.get('attacked')))}</td>"
                f"<td>{percent(found.get('robust_accuracy'))}</td>"
                f"<td>{seconds(found.get('seconds'))}</td>"
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


def meaning_section(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, *, kind: str
) -> str:
    """In words: what the headline numbers mean and how far to trust them."""
    final = after or before
    if not final or not is_number(final.get("robust_accuracy")):
        return ""
    samples = final.get("num_samples")
    count = image_count(samples)
    threat = final.get("threat") or {}
    where = f"{threat.get('norm', '')} epsilon {plain_number(threat.get('epsilon'))}"
    which = "after hardening " if after else ""
    paragraphs = [
        f"Robust accuracy {which}<strong>{plain_percent(final['robust_accuracy'])}</strong> "
        f"on {escape(count)} test images{_trust(final, 'robust_accuracy')}. "
        "It is an upper bound on the true robust accuracy: it counts the images that none of "
        f"the attacks tried ({escape(_headline_attacks(final).removeprefix('worst of '))}) "
        f"could fool within {escape(where)}, and a stronger attack may fool more.",
    ]
    if final.get("attack") is None and is_number(final.get("autoattack_accuracy")):
        # Older jobs ran AutoAttack beside the PGD headline: the lower figure is the tighter bound.
        paragraphs.append(
            f"AutoAttack, run beside it, left {plain_percent(final['autoattack_accuracy'])}"
            f"{_trust(final, 'autoattack_accuracy')}; the lower of the two is the tighter bound."
        )
    if is_number(final.get("clean_accuracy")):
        paragraphs.append(
            f"Clean accuracy {which}{plain_percent(final['clean_accuracy'])} on the same "
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
    bounds = confidence_interval(report, key)
    if bounds is None:
        return ""
    return (
        ": with 95% confidence the true value on this test distribution lies between "
        f"{plain_percent(bounds[0])} and {plain_percent(bounds[1])}"
    )


def _difference(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """The before/after change of robust accuracy against the noise the verdict allows."""
    needed = ("robust_accuracy", "num_samples")
    if not all(is_number(report.get(key)) for report in (before, after) for key in needed):
        return ""
    rise = (float(after["robust_accuracy"]) - float(before["robust_accuracy"])) * 100
    noise = robust_noise(before, after) * 100
    outcome = (
        "beyond it: the gain is not a coin flip of the test draw"
        if rise > noise
        else "within it: this evaluation cannot tell the two models apart on robustness"
    )
    return (
        f"Robust accuracy went from {plain_percent(before['robust_accuracy'])} to "
        f"{plain_percent(after['robust_accuracy'])} ({rise:+.1f} points). The verdict counts "
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
