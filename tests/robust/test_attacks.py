"""Attacks: stay in the ball and in [0,1], find the worst case, leave the model as they found it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.robust.attacks import correct_predictions, fgsm, pgd, random_noise
from core.robust.ensemble import PassCounter
from core.robust.threat import ThreatModel

ATTACKS = {
    "fgsm": lambda model, x, y, threat: fgsm(model, x, y, threat),
    "pgd": lambda model, x, y, threat: pgd(model, x, y, threat),
    "pgd_restarts": lambda model, x, y, threat: pgd(model, x, y, threat, restarts=3),
    "pgd_stop_when_fooled": lambda model, x, y, threat: pgd(
        model, x, y, threat, restarts=2, stop_when_fooled=True
    ),
    "random_noise": lambda model, x, y, threat: random_noise(model, x, y, threat),
}
THREATS = {
    "linf": ThreatModel(norm="linf", epsilon=0.2, steps=10),
    "l2": ThreatModel(norm="l2", epsilon=1.5, steps=10),
}


def accuracy_of(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    return float(correct_predictions(model, x, labels).float().mean())


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


@pytest.mark.parametrize("attack_name", sorted(ATTACKS))
@pytest.mark.parametrize("norm", sorted(THREATS))
def test_attack_stays_in_ball_and_in_pixel_range_and_never_raises_accuracy(
    tiny_cnn, digits, attack_name, norm
):
    threat = THREATS[norm]
    x, labels = digits.test_tensors(n=200)
    x_adv = ATTACKS[attack_name](tiny_cnn, x, labels, threat)
    assert perturbation_norms(x_adv, x, norm).max() <= threat.epsilon + 1e-5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert accuracy_of(tiny_cnn, x_adv, labels) <= accuracy_of(tiny_cnn, x, labels)


@pytest.mark.parametrize("norm", sorted(THREATS))
def test_pgd_lowers_accuracy_of_a_clean_model(tiny_cnn, digits, norm):
    x, labels = digits.test_tensors(n=200)
    x_adv = pgd(tiny_cnn, x, labels, THREATS[norm])
    assert accuracy_of(tiny_cnn, x_adv, labels) < accuracy_of(tiny_cnn, x, labels) - 0.3


def test_l2_attack_uses_its_radius_rather_than_a_box():
    threat = ThreatModel(norm="l2", epsilon=0.5, steps=20)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = torch.full((16, 1, 8, 8), 0.5)
    labels = torch.zeros(16, dtype=torch.long)
    x_adv = pgd(model, x, labels, threat)
    norms = perturbation_norms(x_adv, x, "l2")
    assert norms.max() <= 0.5 + 1e-5
    # An unclamped L2 attack on a linear model goes to the sphere's surface, far beyond the
    # per-pixel size an Linf ball of the same radius would allow across 64 pixels.
    assert norms.min() > 0.49
    assert (x_adv - x).abs().max() > 0.5 / 8


def _linear_two_class_model(weights: torch.Tensor) -> nn.Module:
    """logits = [w·x, -w·x]: the margin of class 0 over class 1 is 2·w·x."""
    layer = nn.Linear(weights.numel(), 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([weights, -weights]))
    return nn.Sequential(nn.Flatten(), layer)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_finds_the_analytic_worst_case_of_a_linear_model(norm):
    torch.manual_seed(0)
    weights = torch.randn(64)
    model = _linear_two_class_model(weights)
    x = torch.full((4, 1, 8, 8), 0.5)  # mid-range, so the [0,1] box is not binding
    labels = torch.zeros(4, dtype=torch.long)
    epsilon = 0.1 if norm == "linf" else 1.0
    # A step as large as the ball lets L2 PGD swing onto the pole in a few projections.
    threat = ThreatModel(norm=norm, epsilon=epsilon, steps=50, step_size=epsilon)
    # The margin w·x falls fastest along -sign(w) (Linf) or -w/|w| (L2), to the ball's edge.
    if norm == "linf":
        worst = x - epsilon * weights.sign().view(1, 1, 8, 8)
    else:
        worst = x - epsilon * (weights / weights.norm()).view(1, 1, 8, 8)
    x_adv = pgd(model, x, labels, threat)
    assert torch.allclose(x_adv, worst.expand_as(x_adv), atol=1e-4)


def test_attack_restores_train_mode_and_leaves_batchnorm_and_gradients_alone(digits):
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(256, 10),
    )
    model.train()
    running_mean = model[1].running_mean.clone()
    x, labels = digits.test_tensors(n=32)
    pgd(model, x, labels, ThreatModel(norm="linf", epsilon=0.1, steps=3))
    assert model.training and all(module.training for module in model.modules())
    assert torch.equal(model[1].running_mean, running_mean)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_more_restarts_fool_at_least_the_same_examples(tiny_cnn, digits):
    threat = ThreatModel(norm="linf", epsilon=0.1, steps=5)
    x, labels = digits.test_tensors(n=200)
    once = pgd(tiny_cnn, x, labels, threat, generator=torch.Generator().manual_seed(3))
    thrice = pgd(
        tiny_cnn, x, labels, threat, restarts=3, generator=torch.Generator().manual_seed(3)
    )
    fooled_once = ~correct_predictions(tiny_cnn, once, labels)
    fooled_thrice = ~correct_predictions(tiny_cnn, thrice, labels)
    assert bool((fooled_thrice | ~fooled_once).all())
    assert int(fooled_thrice.sum()) >= int(fooled_once.sum())


def test_pgd_is_stronger_than_fgsm_on_a_clean_model(tiny_cnn, digits):
    threat = ThreatModel(norm="linf", epsilon=0.1, steps=20)
    x, labels = digits.test_tensors(n=300)
    pgd_accuracy = accuracy_of(tiny_cnn, pgd(tiny_cnn, x, labels, threat), labels)
    fgsm_accuracy = accuracy_of(tiny_cnn, fgsm(tiny_cnn, x, labels, threat), labels)
    assert pgd_accuracy < fgsm_accuracy


@pytest.mark.parametrize("restarts", [1, 3])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_stop_when_fooled_fools_every_example_the_full_attack_fools(
    tiny_cnn, digits, norm, restarts
):
    # Half the radius: a trained model resists PGD on part of the examples.
    threat = ThreatModel(norm=norm, epsilon=THREATS[norm].epsilon / 2, steps=10)
    x, labels = digits.test_tensors(n=200)

    def attacked(stop_when_fooled: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(5)
        return pgd(
            tiny_cnn, x, labels, threat, restarts=restarts, generator=generator,
            stop_when_fooled=stop_when_fooled,
        )  # fmt: skip

    robust_full = correct_predictions(tiny_cnn, attacked(False), labels)
    robust_stopped = correct_predictions(tiny_cnn, attacked(True), labels)
    assert 0 < int(robust_full.sum()) < len(x)
    assert not bool((robust_stopped & ~robust_full).any())


def test_stop_when_fooled_runs_later_steps_on_the_standing_examples_only(tiny_cnn, digits):
    threat = THREATS["linf"]
    x, labels = digits.test_tensors(n=200)
    full, stopped = PassCounter(tiny_cnn), PassCounter(tiny_cnn)
    pgd(full, x, labels, threat)
    pgd(stopped, x, labels, threat, stop_when_fooled=True)
    assert full.images == len(x) * threat.steps
    # The clean model falls within a few steps of the 10 at this radius.
    assert stopped.images < full.images / 2


def _linear_margin_model() -> nn.Module:
    """logits = [m, -m] with m = mean(x) - 0.5: class 0 while the image's mean is above 0.5."""
    layer = nn.Linear(64, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.full((64,), 1 / 64), torch.full((64,), -1 / 64)]))
        layer.bias.copy_(torch.tensor([-0.5, 0.5]))
    return nn.Sequential(nn.Flatten(), layer)


def test_stop_when_fooled_freezes_each_example_where_it_first_falls():
    model = PassCounter(_linear_margin_model())
    # Each Linf step lowers the mean by 0.1, at most twice (epsilon 0.2): the first image is
    # wrong from the start, the second falls at step 1, the third at step 2, the last never.
    means = torch.tensor([0.45, 0.55, 0.62, 0.9])
    x = means.view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
    labels = torch.zeros(4, dtype=torch.long)
    threat = ThreatModel(norm="linf", epsilon=0.2, step_size=0.1, steps=5, random_start=False)
    x_adv = pgd(model, x, labels, threat, stop_when_fooled=True)
    reached = x_adv.flatten(1).mean(1)
    assert torch.allclose(reached, torch.tensor([0.45, 0.45, 0.42, 0.7]), atol=1e-6)
    # Steps 1 to 5 run on 4, 3, 2, 1 and 1 images: a fall is seen at the next step's forward.
    assert model.images == 4 + 3 + 2 + 1 + 1


def test_stop_when_fooled_restarts_only_the_examples_no_earlier_restart_fooled():
    model = PassCounter(_linear_margin_model())
    x = torch.tensor([0.55, 0.9]).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
    labels = torch.zeros(2, dtype=torch.long)
    threat = ThreatModel(norm="linf", epsilon=0.2, step_size=0.1, steps=5, random_start=False)
    x_adv = pgd(model, x, labels, threat, restarts=3, stop_when_fooled=True)
    assert torch.allclose(x_adv.flatten(1).mean(1), torch.tensor([0.45, 0.7]), atol=1e-6)
    # The first restart: steps on 2, 2, 1, 1, 1 images and a check of the last point of the
    # standing one; each later restart: 5 steps and a check of that one image alone.
    assert model.images == (2 + 2 + 1 + 1 + 1 + 1) + 2 * (5 + 1)
