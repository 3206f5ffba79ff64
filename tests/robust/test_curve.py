"""Accuracy against epsilon from one outward search: the per-radius numbers, at a fraction of
the cost of attacking every radius afresh."""

from __future__ import annotations

import torch

from core.robust.attacks import correct_predictions, pgd
from core.robust.curve import robust_by_epsilon
from core.robust.ensemble import PassCounter
from core.robust.measure import accuracy, survivors
from core.robust.threat import ThreatModel

DEVICE = torch.device("cpu")
THREAT = ThreatModel(norm="linf", epsilon=0.1, steps=10)
RADII = [0.025, 0.05, 0.1, 0.15, 0.2]


def _pgd_at(model, radius):
    generator = torch.Generator().manual_seed(0)
    return lambda x, y: pgd(model, x, y, THREAT.with_epsilon(radius), generator=generator)


def test_searched_curve_matches_per_epsilon_pgd_within_noise_at_a_fraction_of_its_cost(
    tiny_cnn, digits
):
    test = digits.test
    n = len(test)
    x, labels = test.tensors()
    correct = correct_predictions(tiny_cnn, x, labels)
    headline = survivors(
        tiny_cnn, test, correct, _pgd_at(tiny_cnn, THREAT.epsilon), batch_size=128, device=DEVICE
    )
    counted = PassCounter(tiny_cnn)
    curve = robust_by_epsilon(
        counted, test, epsilon=THREAT.epsilon, robust_at_epsilon=headline, correct=correct,
        radii=RADII, attack_at=lambda radius: _pgd_at(counted, radius), batch_size=128,
        device=DEVICE,
    )  # fmt: skip
    searched = {radius: float(mask.float().mean()) for radius, mask in curve.items()}
    assert sorted(searched) == [0.0, *RADII]
    values = [searched[radius] for radius in sorted(searched)]
    assert values == sorted(values, reverse=True)
    assert values[1] > 0.5 and values[-1] < 0.2  # a curve with a shape, not all 0 or all 1
    fresh = {radius: accuracy(tiny_cnn, test, _pgd_at(tiny_cnn, radius)) for radius in RADII}
    for radius in RADII:
        # Two runs of PGD differ by a few examples (random starts); the search may only be
        # stronger above the headline radius (an AND) and weaker below it (an OR).
        assert abs(searched[radius] - fresh[radius]) <= 0.02 + 2 / n, (radius, searched, fresh)
    # Cost: every radius afresh attacks the clean-correct examples 4 more times; the search
    # attacks each only until its place is known.
    afresh = 4 * int(correct.sum()) * THREAT.steps
    assert counted.images <= 0.5 * afresh, (counted.images, afresh)


def test_resisting_at_the_headline_radius_counts_below_it_and_fooled_counts_above(tiny_cnn, digits):
    test = digits.test.subset(torch.arange(200))
    x, labels = test.tensors()
    correct = correct_predictions(tiny_cnn, x, labels)
    headline = survivors(
        tiny_cnn, test, correct, _pgd_at(tiny_cnn, THREAT.epsilon), batch_size=128, device=DEVICE
    )
    curve = robust_by_epsilon(
        tiny_cnn, test, epsilon=THREAT.epsilon, robust_at_epsilon=headline, correct=correct,
        radii=RADII, attack_at=lambda radius: _pgd_at(tiny_cnn, radius), batch_size=128,
        device=DEVICE,
    )  # fmt: skip
    for radius in RADII:
        if radius < THREAT.epsilon:
            assert not (headline & ~curve[radius]).any()
        if radius > THREAT.epsilon:
            assert not (curve[radius] & ~headline).any()
    assert torch.equal(curve[0.0], correct) and torch.equal(curve[THREAT.epsilon], headline)
