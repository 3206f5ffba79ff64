"""The CLI's before/after table and the SDK's Evaluation: every accuracy with its 95% interval
and the sample count, for reports in the shape the service stores now (hand-built here) and for
reports older servers stored without presets, stages or intervals."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from cli.job_tables import accuracy_table
from robustify import Evaluation, Job
from robustify.types.evaluation import wilson_interval

THREAT = {"norm": "linf", "epsilon": 0.2, "step_size": None, "steps": 10}


def new_report(*, robust: float = 0.52, interval: list[float] | None = None) -> dict[str, Any]:
    """metrics.before/after as the service stores them now (attack "standard")."""
    return {
        "attack": "standard",
        "clean_accuracy": 0.95,
        "robust_accuracy": robust,
        "pgd_accuracy": 0.55,
        "fgsm_accuracy": 0.70,
        "autoattack_accuracy": None,
        "stages": [
            {"name": "PGD-20", "attacked": 950, "robust_accuracy": 0.55, "seconds": 1.2},
            {"name": "APGD-CE", "attacked": 550, "robust_accuracy": 0.53, "seconds": 0.8},
            {"name": "APGD-T", "attacked": 530, "robust_accuracy": robust, "seconds": 1.9},
        ],
        "accuracy_by_epsilon": {"0": 0.95, "0.1": 0.8, "0.2": robust},
        "confidence_level": 0.95,
        "confidence_intervals": {
            "clean_accuracy": [0.936, 0.962],
            "robust_accuracy": interval or [0.489, 0.551],
            "pgd_accuracy": [0.519, 0.581],
            "fgsm_accuracy": [0.671, 0.727],
            "accuracy_by_epsilon": {
                "0": [0.936, 0.962],
                "0.1": [0.774, 0.824],
                "0.2": interval or [0.489, 0.551],
            },
        },
        "threat": THREAT,
        "attack_steps": 20,
        "restarts": 1,
        "num_samples": 1000,
        "seed": 0,
        "checks": [],
        "warnings": [],
    }


def old_report(*, robust: float = 0.5) -> dict[str, Any]:
    """metrics.before/after as older servers stored them: PGD was the headline."""
    return {
        "clean_accuracy": 0.9,
        "robust_accuracy": robust,
        "fgsm_accuracy": 0.6,
        "autoattack_accuracy": None,
        "accuracy_by_epsilon": {"0": 0.9, "0.1": 0.7, "0.2": robust},
        "threat": THREAT,
        "attack_steps": 10,
        "restarts": 1,
        "num_samples": 100,
        "seed": 0,
        "checks": [],
        "warnings": [],
    }


def job_json(before: dict[str, Any], after: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "job_1",
        "kind": "harden" if after else "evaluate",
        "status": "succeeded",
        "model_id": "mdl_1",
        "dataset": "builtin:digits",
        "metrics": {"before": before, "after": after, "epochs": []},
    }


def rendered(job: dict[str, Any]) -> str:
    table = accuracy_table(Job.from_json(job))
    assert table is not None
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def line(text: str, label: str) -> str:
    return next(row for row in text.splitlines() if label in row)


def test_each_accuracy_is_shown_with_the_interval_the_service_stored():
    text = rendered(job_json(new_report(robust=0.30, interval=[0.272, 0.329]), new_report()))

    headline = line(text, "worst of PGD-20, APGD-CE, APGD-T (eps 0.2)")
    assert "30.0% (27.2–32.9)" in headline and "52.0% (48.9–55.1)" in headline
    assert "95.0% (93.6–96.2)" in line(text, "clean")
    assert "55.0% (51.9–58.1)" in line(text, "PGD-20 (eps 0.2)")
    assert "80.0% (77.4–82.4)" in line(text, "PGD-20 at eps 0.1")
    assert "test set (1,000 images)" in text
    caption = " ".join(text.split())  # the caption wraps at the table's width
    assert "95% Wilson interval on those 1,000 images" in caption
    assert "Robust accuracy is an upper bound" in caption


def test_an_old_report_shows_intervals_computed_from_its_accuracy_and_sample_count():
    # 0.5 on 100 images: the Wilson interval is [40.4%, 59.6%]; 0.9: [82.6%, 94.5%].
    text = rendered(job_json(old_report(robust=0.3), old_report()))

    assert "30.0% (21.9–39.6)" in line(text, "PGD-10 (eps 0.2)")
    assert "50.0% (40.4–59.6)" in line(text, "PGD-10 (eps 0.2)")
    assert "90.0% (82.6–94.5)" in line(text, "clean")
    assert "70.0% (60.4–78.1)" in line(text, "PGD-10 at eps 0.1")
    assert "worst of" not in text
    assert "test set (100 images)" in text


def test_an_evaluate_job_has_one_column_with_its_intervals():
    text = rendered(job_json(new_report()))

    assert "model" in line(text, "accuracy")
    assert "52.0% (48.9–55.1)" in line(text, "worst of PGD-20, APGD-CE, APGD-T")


def test_the_sdk_reads_a_new_report_as_stored():
    evaluation = Evaluation.from_json(new_report())

    assert evaluation.attack == "standard"
    assert evaluation.pgd_accuracy == 0.55
    assert [stage.name for stage in evaluation.stages] == ["PGD-20", "APGD-CE", "APGD-T"]
    assert evaluation.stages[1].attacked == 550
    assert evaluation.confidence_level == 0.95
    assert evaluation.confidence_intervals["robust_accuracy"] == (0.489, 0.551)
    assert "autoattack_accuracy" not in evaluation.confidence_intervals
    assert evaluation.intervals_by_epsilon[0.1] == (0.774, 0.824)


def test_the_sdk_reads_an_old_report_and_computes_its_intervals():
    evaluation = Evaluation.from_json(old_report())

    assert evaluation.attack is None and evaluation.pgd_accuracy is None
    assert evaluation.stages == []
    assert evaluation.confidence_intervals["robust_accuracy"] == pytest.approx(
        (0.4038, 0.5962), abs=1e-4
    )
    assert set(evaluation.confidence_intervals) == {
        "clean_accuracy",
        "robust_accuracy",
        "fgsm_accuracy",
    }
    assert set(evaluation.intervals_by_epsilon) == {0.0, 0.1, 0.2}


def test_the_sdks_wilson_interval_matches_the_textbook_values():
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0.95, 1000) == pytest.approx((0.9347, 0.9619), abs=1e-4)
