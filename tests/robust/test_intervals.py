"""Wilson score intervals, checked against tabulated values."""

from __future__ import annotations

import math

import pytest

from core.robust.intervals import wilson_half_width, wilson_interval


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (50, 100, 0.4038, 0.5962),  # symmetric at one half
        (0, 10, 0.0, 0.2775),  # no success: the interval still has width (Wald's has none)
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
        (81, 263, 0.2553, 0.3662),  # an asymmetric case
    ],
)
def test_wilson_interval_matches_known_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes / n, n)
    assert got_low == pytest.approx(low, abs=5e-4)
    assert got_high == pytest.approx(high, abs=5e-4)


def test_interval_is_not_centered_on_the_estimate_near_the_edges():
    low, high = wilson_interval(0.95, 100)
    assert 0.95 - low > high - 0.95  # pulled toward one half
    assert 0 <= low < 0.95 < high <= 1


def test_interval_narrows_as_one_over_root_n():
    wide = wilson_half_width(0.5, 100)
    narrow = wilson_half_width(0.5, 10_000)
    assert wide / narrow == pytest.approx(10, rel=0.02)
    assert wilson_half_width(0.5, 1000) == pytest.approx(1.96 * math.sqrt(0.25 / 1000), rel=0.01)


def test_no_samples_means_no_knowledge():
    assert wilson_interval(0.3, 0) == (0.0, 1.0)
    assert wilson_half_width(0.3, 0) == math.inf


def test_the_torch_free_verdict_can_import_it_without_loading_torch():
    import subprocess
    import sys

    code = (
        "import sys, core.service.jobs.verdict; assert 'torch' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
