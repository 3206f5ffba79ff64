"""The report's evaluation with its uncertainty: every accuracy with its 95% interval, the
attack ensemble's stages, each sanity check's sample count and the words that say how far to
trust the numbers; for reports in the shape the engine stores now (hand-built here) and for
reports older jobs stored without intervals, presets or stages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from report_shapes import THREAT, new_report, old_report

from api.report import render_report
from core.service.jobs.verdict import harden_verdict, robust_noise


def job(kind: str = "evaluate", **metrics: Any) -> SimpleNamespace:
    """What render_report reads of a job, for a job that succeeded with `metrics`."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return SimpleNamespace(
        id="job_1",
        kind=kind,
        status="succeeded",
        model_id="mdl_1",
        dataset="builtin:digits",
        config={"threat_model": THREAT, "evaluation": {"attack": "standard"}, "seed": 0},
        progress={"phase": "done", "fraction": 1.0},
        metrics=metrics,
        manifest={},
        error=None,
        result_model_id=None,
        created_at=now,
        finished_at=now,
    )


def table_row(html: str, metric: str) -> str:
    match = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', html)
    assert match is not None, f"no {metric} row"
    return match.group(1)


def section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    return html[html.rfind("<section", 0, start) : html.index("</section>", start)]


def words(html: str) -> str:
    """The text of the report's explanation, tags dropped and entities read."""
    text = re.sub(r"<[^>]+>", "", section(html, "meaning"))
    return text.replace("&plusmn;", "±")


def test_each_accuracy_is_shown_with_the_interval_the_report_stores():
    html = render_report(job(before=new_report()))

    assert "52.0% <span" in table_row(html, "robust_accuracy")
    assert "[48.9&ndash;55.1]" in table_row(html, "robust_accuracy")
    assert "[93.6&ndash;96.2]" in table_row(html, "clean_accuracy")
    assert "[51.9&ndash;58.1]" in table_row(html, "pgd_accuracy")
    assert "[67.1&ndash;72.7]" in table_row(html, "fgsm_accuracy")
    assert "worst of PGD-20, APGD-CE, APGD-T" in table_row(html, "robust_accuracy")
    assert "PGD-20 (linf, eps 0.0314)" in table_row(html, "pgd_accuracy")
    assert "1,000 test images" in section(html, "before-after")
    assert "95% confidence" in section(html, "before-after")
    epsilons = section(html, "by-epsilon")
    assert "90.0% <span" in epsilons and "[88.0&ndash;91.7]" in epsilons


def test_the_ensembles_stages_are_listed_with_how_many_images_each_attacked():
    html = render_report(job(before=new_report()))

    stages = section(html, "stages")
    names = re.findall(r'<tr data-stage="([^"]+)">', stages)
    assert names == ["PGD-20", "APGD-CE", "APGD-T"]
    apgd_t = re.search(r'<tr data-stage="APGD-T">(.*?)</tr>', stages)
    assert apgd_t is not None
    assert "<td>530</td>" in apgd_t.group(1) and "52.0%" in apgd_t.group(1)
    assert "only on the test images that every earlier one had failed to fool" in stages


def test_each_sanity_check_says_how_many_images_it_used():
    checks = section(render_report(job(before=new_report())), "checks")

    assert "passed</strong> on 200 images: PGD 0.55" in checks
    assert "passed</strong> on 100 images: 0.0 at epsilon 1" in checks


def test_the_report_says_in_words_what_the_robust_accuracy_means():
    text = words(render_report(job(before=new_report())))

    assert (
        "Robust accuracy 52.0% on 1,000 test images: with 95% confidence the true value on "
        "this test distribution lies between 48.9% and 55.1%" in text
    )
    assert "upper bound on the true robust accuracy" in text
    assert "(PGD-20, APGD-CE, APGD-T)" in text and "a stronger attack may fool more" in text
    assert "±3.1 points at 50% on 1,000 images" in text
    assert "not a shift between this test set" in text


def test_the_words_compare_the_change_with_the_verdicts_noise():
    before = new_report(robust=0.30, interval=[0.272, 0.329])
    after = new_report()
    noise = robust_noise(before, after) * 100
    assert harden_verdict(before, after, max_clean_drop=0.03) == "improved"

    text = words(render_report(job("harden", before=before, after=after, verdict="improved")))

    assert "Robust accuracy went from 30.0% to 52.0% (+22.0 points)" in text
    assert f"±{noise:.1f} points here; this change is beyond it" in text
    assert "Robust accuracy after hardening 52.0%" in text


def test_a_change_within_the_noise_is_said_to_be_so():
    before, after = new_report(robust=0.50), new_report(robust=0.52)

    text = words(render_report(job("harden", before=before, after=after, verdict="not_improved")))

    assert "this change is within it" in text


def test_a_failed_sanity_check_is_said_to_undermine_the_bound():
    report = new_report()
    report["checks"][0] = {**report["checks"][0], "passed": False}

    assert "A sanity check failed" in words(render_report(job(before=report)))


def test_an_old_report_shows_intervals_computed_from_its_accuracy_and_sample_count():
    # 0.5 on 100 images: the Wilson interval is [40.4%, 59.6%]; 0.9: [82.6%, 94.5%].
    html = render_report(job(before=old_report()))

    robust = table_row(html, "robust_accuracy")
    assert "PGD-10 (linf, eps 0.2)" in robust
    assert "50.0% <span" in robust and "[40.4&ndash;59.6]" in robust
    assert "[82.6&ndash;94.5]" in table_row(html, "clean_accuracy")
    assert 'data-metric="pgd_accuracy"' not in html
    assert 'id="stages"' not in html
    assert "[40.4&ndash;59.6]" in section(html, "by-epsilon")
    checks = section(html, "checks")
    assert "passed</strong> PGD 0.5" in checks  # no sample count: none was stored
    text = words(html)
    assert "Robust accuracy 50.0% on 100 test images" in text
    assert "between 40.4% and 59.6%" in text
    assert "(PGD-10)" in text


def test_an_old_report_with_autoattack_keeps_its_autoattack_row():
    html = render_report(job(before=old_report(autoattack=0.45)))

    row = table_row(html, "autoattack_accuracy")
    assert "AutoAttack (linf, eps 0.2)" in row and "45.0% <span" in row
    assert "AutoAttack, run beside it, left 45.0%: with 95% confidence" in words(html)


def test_a_report_with_a_malformed_interval_falls_back_to_the_computed_one():
    report = old_report()
    report["confidence_intervals"] = {"robust_accuracy": "wide", "accuracy_by_epsilon": [1]}

    html = render_report(job(before=report))

    assert "[40.4&ndash;59.6]" in table_row(html, "robust_accuracy")
