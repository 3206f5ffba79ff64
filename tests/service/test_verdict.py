"""The verdict of a harden job from its before/after test evaluations."""

from __future__ import annotations

import pytest

from core.service.jobs.verdict import (
    harden_verdict,
    wilson_half_width,
    wilson_interval,
)


def report(clean: float, robust: float, samples: int = 360) -> dict[str, float | int]:
    return {"clean_accuracy": clean, "robust_accuracy": robust, "num_samples": samples}


def test_robust_gain_beyond_noise_with_clean_kept_is_improved():
    assert harden_verdict(report(0.97, 0.05), report(0.96, 0.55), max_clean_drop=0.03) == (
        "improved"
    )


def test_clean_drop_beyond_the_limit_is_clean_dropped_even_with_a_robust_gain():
    assert harden_verdict(report(0.97, 0.05), report(0.90, 0.60), max_clean_drop=0.03) == (
        "clean_dropped"
    )


def test_a_drop_of_exactly_the_limit_is_allowed():
    assert harden_verdict(report(0.97, 0.05), report(0.94, 0.60), max_clean_drop=0.03) == (
        "improved"
    )


@pytest.mark.parametrize(("robust_after", "samples"), [(0.50, 360), (0.53, 50), (0.40, 360)])
def test_a_gain_within_the_noise_or_a_loss_is_not_improved(robust_after, samples):
    before = report(0.97, 0.50, samples)
    assert harden_verdict(before, report(0.97, robust_after, samples), max_clean_drop=0.03) == (
        "not_improved"
    )


def test_the_same_gain_is_improved_on_enough_samples():
    # +6 points: inside the noise of 50 images, beyond that of 2,000.
    small = harden_verdict(report(0.9, 0.50, 50), report(0.9, 0.56, 50), max_clean_drop=0.03)
    large = harden_verdict(report(0.9, 0.50, 2000), report(0.9, 0.56, 2000), max_clean_drop=0.03)
    assert (small, large) == ("not_improved", "improved")


def test_wilson_half_width_matches_the_textbook_value():
    # p = 0.5, n = 100: the Wilson interval is 0.5 +- 0.0961 (z = 1.96).
    assert wilson_half_width(0.5, 100) == pytest.approx(0.0961, abs=1e-4)
    assert wilson_half_width(0.0, 360) > 0  # never zero: 0/360 is not certainty


@pytest.mark.parametrize(
    ("accuracy", "samples", "low", "high"),
    [
        (0.5, 100, 0.4038, 0.5962),  # symmetric at one half
        (0.52, 1000, 0.4890, 0.5508),
        (0.95, 1000, 0.9347, 0.9619),  # pulled toward one half: 0.95 is not its center
        (0.0, 10, 0.0, 0.2775),  # 0 of 10: high = z²/(n + z²), never a zero-width [0, 0]
        (1.0, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval_matches_the_textbook_values(
    accuracy: float, samples: int, low: float, high: float
):
    bounds = wilson_interval(accuracy, samples)

    assert bounds == pytest.approx((low, high), abs=1e-4)
    assert (bounds[1] - bounds[0]) / 2 == pytest.approx(wilson_half_width(accuracy, samples))


def test_wilson_interval_on_no_samples_is_everything():
    assert wilson_interval(0.7, 0) == (0.0, 1.0)
