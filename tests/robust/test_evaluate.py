"""Evaluation: reproducible numbers, and sanity checks that catch gradient masking."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from core.robust.evaluation import CHECK_SAMPLES, evaluate
from core.robust.intervals import wilson_interval
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=0.2)


class RoundedInput(nn.Module):
    """A classic false defence: rounding the input has zero gradient, so PGD is blind."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x))


class SaturatedLogits(nn.Module):
    """Another: huge logits saturate the softmax, so cross-entropy gradients vanish."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e4


def test_same_call_gives_the_same_numbers_on_the_same_subset(tiny_cnn, digits):
    first = evaluate(tiny_cnn, digits.test, THREAT, max_samples=150, seed=7, device="cpu")
    second = evaluate(tiny_cnn, digits.test, THREAT, max_samples=150, seed=7, device="cpu")
    assert first.num_samples == 150 and first.subset_indices == second.subset_indices
    assert first.accuracy_by_epsilon == second.accuracy_by_epsilon
    assert first.robust_accuracy == second.robust_accuracy


def test_honest_model_passes_every_check_and_accuracy_falls_with_epsilon(tiny_cnn, digits):
    report = evaluate(tiny_cnn, digits.test, THREAT, device="cpu")
    assert report.checks and all(check.passed for check in report.checks), report.checks
    assert report.warnings == []
    curve = [report.accuracy_by_epsilon[eps] for eps in sorted(report.accuracy_by_epsilon)]
    assert curve[0] == report.clean_accuracy and curve[-1] < 0.05
    assert report.robust_accuracy <= report.fgsm_accuracy <= report.clean_accuracy


@pytest.mark.parametrize("masking", [RoundedInput, SaturatedLogits])
def test_gradient_masking_is_flagged_not_sold_as_robustness(tiny_cnn, digits, masking):
    report = evaluate(masking(tiny_cnn), digits.test, THREAT, device="cpu")
    # The masked model looks robust to PGD...
    assert report.pgd_accuracy > 0.8
    # ...but the checks see through it.
    failed = {check.name for check in report.checks if not check.passed}
    assert "pgd_at_least_as_strong_as_random_noise" in failed
    assert "large_epsilon_reaches_chance" in failed
    assert any("gradient masking" in warning for warning in report.warnings)


def test_standard_ensemble_sees_through_saturated_logits_where_pgd_does_not(tiny_cnn, digits):
    # Cross-entropy's gradient vanishes on logits scaled by 1e4; APGD-T's DLR loss is
    # invariant to the scale, so the headline does not sell the scaling as robustness.
    model = SaturatedLogits(tiny_cnn)
    fast = evaluate(model, digits.test, THREAT, attack="fast", sanity_checks=False, device="cpu")
    standard = evaluate(model, digits.test, THREAT, sanity_checks=False, device="cpu")
    assert fast.robust_accuracy == fast.pgd_accuracy > 0.8
    assert standard.pgd_accuracy == fast.pgd_accuracy
    assert standard.robust_accuracy < 0.1
    assert [stage.name for stage in standard.stages] == ["PGD-20", "APGD-CE", "APGD-T (3 targets)"]


def test_every_accuracy_carries_its_sample_count_and_wilson_interval(tiny_cnn, digits):
    report = evaluate(tiny_cnn, digits.test, THREAT.with_epsilon(0.1), device="cpu")
    data = json.loads(json.dumps(report.to_dict()))
    n = data["num_samples"]
    assert n == len(digits.test) and data["confidence_level"] == 0.95
    intervals = data["confidence_intervals"]
    for name in ("clean_accuracy", "robust_accuracy", "pgd_accuracy", "fgsm_accuracy"):
        low, high = intervals[name]
        assert low <= data[name] <= high, name
        assert (low, high) == pytest.approx(wilson_interval(data[name], n))
    assert "autoattack_accuracy" not in intervals  # not measured: no interval either
    assert set(intervals["accuracy_by_epsilon"]) == set(data["accuracy_by_epsilon"])
    # The costly checks ran on a subset and say so; the cheap FGSM one on every example.
    sizes = {check["name"]: check["num_samples"] for check in data["checks"]}
    assert sizes.pop("pgd_at_least_as_strong_as_fgsm") == n
    assert set(sizes.values()) == {CHECK_SAMPLES}


def test_report_serializes_to_json(tiny_cnn, digits):
    report = evaluate(
        tiny_cnn, digits.test, THREAT, max_samples=50, epsilons=[0.1, 0.3], device="cpu"
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data["accuracy_by_epsilon"]) == {"0", "0.1", "0.2", "0.3"}
    assert data["threat"]["epsilon"] == 0.2 and len(data["subset_indices"]) == 50
    assert data["attack"] == "standard" and data["forward_passes"] > 0
    assert data["stages"][0]["name"] == "PGD-20"


def test_autoattack_preset_runs_and_is_at_least_as_strong_as_pgd(tiny_cnn, digits):
    report = evaluate(
        tiny_cnn,
        digits.test,
        THREAT.with_epsilon(0.1),
        max_samples=60,
        attack="autoattack",
        sanity_checks=False,
        device="cpu",
    )
    assert report.autoattack_accuracy == report.robust_accuracy
    assert report.robust_accuracy <= report.pgd_accuracy
    assert report.autoattack_accuracy < report.clean_accuracy
    assert report.stages[-1].name == "AutoAttack (standard)"
