"""Learning-rate schedules, stepped per iteration."""

from __future__ import annotations

import math

import pytest

from core.robust.errors import InvalidConfig
from core.robust.schedules import ScheduleConfig, make_schedule, slow_start_fast_decay

TOTAL, PER_EPOCH, PEAK = 100, 10, 0.1


def test_slow_start_fast_decay_linear_follows_the_formula():
    lr = slow_start_fast_decay(
        peak_lr=PEAK,
        total_steps=TOTAL,
        steps_per_epoch=PER_EPOCH,
        warmup_fraction=0.3,
        decay="linear",
    )
    assert lr(0) == 0.0
    assert lr(15) == pytest.approx(PEAK * 15 / 30)  # η·t/(p·T)
    assert lr(30) == pytest.approx(PEAK)  # the peak at p·T
    assert lr(65) == pytest.approx(PEAK * (100 - 65) / 70)  # η·(T-t)/((1-p)·T)
    assert lr(99) == pytest.approx(PEAK / 70)
    values = [lr(t) for t in range(TOTAL)]
    assert values[:31] == sorted(values[:31]) and values[30:] == sorted(values[30:], reverse=True)


def test_slow_start_fast_decay_exponential_decays_by_gamma_per_epoch():
    lr = slow_start_fast_decay(
        peak_lr=PEAK,
        total_steps=TOTAL,
        steps_per_epoch=PER_EPOCH,
        warmup_fraction=0.5,
        decay="exponential",
        decay_gamma=0.5,
    )
    assert lr(25) == pytest.approx(PEAK / 2)
    assert lr(50) == pytest.approx(PEAK)
    assert lr(60) == pytest.approx(PEAK * 0.5)
    assert lr(80) == pytest.approx(PEAK * 0.125)


@pytest.mark.parametrize(
    ("name", "expected_at"),
    [
        ("constant", {0: PEAK, 50: PEAK, 99: PEAK}),
        ("piecewise", {0: PEAK, 49: PEAK, 50: PEAK * 0.1, 75: PEAK * 0.01}),
        ("cosine", {0: PEAK, 50: PEAK / 2, 100: 0.0}),
        ("one_cycle", {0: PEAK / 25, 30: PEAK, 100: PEAK / 1e4}),
    ],
)
def test_comparison_schedules_hit_their_landmarks(name, expected_at):
    lr = make_schedule(
        ScheduleConfig(name=name, peak_lr=PEAK), total_steps=TOTAL, steps_per_epoch=PER_EPOCH
    )
    for step, expected in expected_at.items():
        assert lr(step) == pytest.approx(expected, abs=1e-12)


def test_one_cycle_rises_then_falls():
    lr = make_schedule(
        ScheduleConfig(name="one_cycle", peak_lr=PEAK), total_steps=TOTAL, steps_per_epoch=PER_EPOCH
    )
    values = [lr(t) for t in range(TOTAL)]
    peak_at = values.index(max(values))
    assert peak_at == 30
    assert all(math.isfinite(v) and v > 0 for v in values)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (dict(name="linear_warmup"), "schedule"),
        (dict(peak_lr=0.0), "peak_lr"),
        (dict(peak_lr=float("nan")), "peak_lr"),
        (dict(warmup_fraction=1.0), "warmup_fraction"),
        (dict(decay="cubic"), "decay"),
        (dict(decay_gamma=1.5), "decay_gamma"),
    ],
)
def test_bad_schedule_settings_are_refused_with_their_name(bad, named):
    with pytest.raises(InvalidConfig, match=named):
        ScheduleConfig(**bad)
