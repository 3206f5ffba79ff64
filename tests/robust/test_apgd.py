"""APGD: stays in the ball and the box, matches torchattacks' port of AutoAttack, is no weaker
than PGD, is reproducible from its generator and leaves the model as it found it."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from core.robust.apgd import _checkpoints, apgd, apgd_targeted, dlr_loss, targeted_dlr_loss
from core.robust.attacks import correct_predictions, pgd
from core.robust.threat import ThreatModel

STEPS = 20
# Radii at which the digits CNN keeps roughly 60% accuracy under attack: between 15% and 85%,
# so that a weaker or a stronger attack than torchattacks' shows in the numbers.
THREATS = {
    "linf": ThreatModel(norm="linf", epsilon=0.1, steps=STEPS),
    "l2": ThreatModel(norm="l2", epsilon=0.5, steps=STEPS),
}
TORCHATTACKS_NORMS = {"linf": "Linf", "l2": "L2"}
ATTACKS = {
    "apgd_ce": lambda model, x, y, threat, generator: apgd(
        model, x, y, threat, steps=STEPS, generator=generator
    ),
    "apgd_dlr": lambda model, x, y, threat, generator: apgd(
        model, x, y, threat, steps=STEPS, loss="dlr", restarts=2, generator=generator
    ),
    "apgd_t": lambda model, x, y, threat, generator: apgd_targeted(
        model, x, y, threat, steps=STEPS, target_classes=3, generator=generator
    ),
}


def accuracy_of(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    return float(correct_predictions(model, x, labels).float().mean())


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("attack_name", sorted(ATTACKS))
@pytest.mark.parametrize("norm", sorted(THREATS))
def test_apgd_stays_in_ball_and_pixel_range_and_lowers_accuracy(
    tiny_cnn, digits, attack_name, norm
):
    threat = THREATS[norm]
    x, labels = digits.test_tensors(n=200)
    x_adv = ATTACKS[attack_name](tiny_cnn, x, labels, threat, seeded())
    tolerance = 1e-6 if norm == "linf" else 1e-5
    assert perturbation_norms(x_adv, x, norm).max() <= threat.epsilon + tolerance
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert accuracy_of(tiny_cnn, x_adv, labels) < accuracy_of(tiny_cnn, x, labels) - 0.2


@pytest.mark.parametrize("norm", sorted(THREATS))
def test_apgd_ce_matches_torchattacks_apgd(tiny_cnn, digits, norm):
    threat = THREATS[norm]
    x, labels = digits.test_tensors(n=300)
    ours_adv = apgd(tiny_cnn, x, labels, threat, steps=STEPS, generator=seeded())
    reference = torchattacks.APGD(
        tiny_cnn,
        norm=TORCHATTACKS_NORMS[norm],
        eps=threat.epsilon,
        steps=STEPS,
        n_restarts=1,
        loss="ce",
        seed=0,
    )
    ours = accuracy_of(tiny_cnn, ours_adv, labels)
    theirs = accuracy_of(tiny_cnn, reference(x, labels), labels)
    assert 0.15 <= theirs <= 0.85
    assert abs(ours - theirs) <= 0.03 + 1 / len(x)


@pytest.mark.parametrize("norm", sorted(THREATS))
def test_apgd_targeted_matches_torchattacks_apgdt(tiny_cnn, digits, norm):
    threat = THREATS[norm]
    x, labels = digits.test_tensors(n=300)
    ours_adv = apgd_targeted(
        tiny_cnn, x, labels, threat, steps=STEPS, target_classes=9, generator=seeded()
    )
    reference = torchattacks.APGDT(
        tiny_cnn,
        norm=TORCHATTACKS_NORMS[norm],
        eps=threat.epsilon,
        steps=STEPS,
        n_restarts=1,
        n_classes=10,
        seed=0,
    )
    ours = accuracy_of(tiny_cnn, ours_adv, labels)
    theirs = accuracy_of(tiny_cnn, reference(x, labels), labels)
    assert 0.15 <= theirs <= 0.85
    assert abs(ours - theirs) <= 0.03 + 1 / len(x)


@pytest.mark.parametrize("norm", sorted(THREATS))
def test_apgd_ce_is_at_least_as_strong_as_pgd_with_as_many_steps(tiny_cnn, digits, norm):
    threat = THREATS[norm]
    x, labels = digits.test_tensors(n=300)
    apgd_accuracy = accuracy_of(
        tiny_cnn, apgd(tiny_cnn, x, labels, threat, steps=STEPS, generator=seeded()), labels
    )
    pgd_accuracy = accuracy_of(
        tiny_cnn, pgd(tiny_cnn, x, labels, threat, generator=seeded()), labels
    )
    assert 0.15 <= pgd_accuracy <= 0.85
    assert apgd_accuracy <= pgd_accuracy + 0.01 + 1 / len(x)


@pytest.mark.parametrize("attack_name", sorted(ATTACKS))
def test_same_generator_seed_gives_the_same_examples(tiny_cnn, digits, attack_name):
    x, labels = digits.test_tensors(n=100)
    attack = ATTACKS[attack_name]
    first = attack(tiny_cnn, x, labels, THREATS["l2"], seeded(7))
    again = attack(tiny_cnn, x, labels, THREATS["l2"], seeded(7))
    other_seed = attack(tiny_cnn, x, labels, THREATS["l2"], seeded(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other_seed)  # the generator is what the start is drawn from


@pytest.mark.parametrize("attack_name", sorted(ATTACKS))
def test_attack_runs_in_eval_mode_restores_train_mode_and_leaves_gradients_alone(
    digits, attack_name
):
    torch.manual_seed(0)
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
    modes_seen: list[bool] = []
    model.register_forward_hook(lambda module, inputs, output: modes_seen.append(module.training))
    x, labels = digits.test_tensors(n=32)
    ATTACKS[attack_name](model, x, labels, THREATS["linf"], seeded())
    assert modes_seen and not any(modes_seen)
    assert model.training and all(module.training for module in model.modules())
    assert torch.equal(model[1].running_mean, running_mean)
    assert all(parameter.grad is None for parameter in model.parameters())


def test_more_restarts_fool_at_least_the_same_examples(tiny_cnn, digits):
    x, labels = digits.test_tensors(n=200)
    threat = ThreatModel(norm="linf", epsilon=0.08)
    once = apgd(tiny_cnn, x, labels, threat, steps=5, generator=seeded(3))
    thrice = apgd(tiny_cnn, x, labels, threat, steps=5, restarts=3, generator=seeded(3))
    fooled_once = ~correct_predictions(tiny_cnn, once, labels)
    fooled_thrice = ~correct_predictions(tiny_cnn, thrice, labels)
    assert bool((fooled_thrice | ~fooled_once).all())
    assert int(fooled_thrice.sum()) > int(fooled_once.sum())


def _linear_two_class_model(weights: torch.Tensor) -> nn.Module:
    """logits = [w·x, -w·x]: the margin of class 0 over class 1 is 2·w·x."""
    layer = nn.Linear(weights.numel(), 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([weights, -weights]))
    return nn.Sequential(nn.Flatten(), layer)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("attack_name", ["apgd_dlr", "apgd_t"])
def test_two_class_model_falls_back_to_ce_and_finds_the_analytic_worst_case(norm, attack_name):
    torch.manual_seed(0)
    weights = torch.randn(64)
    weights -= weights.mean()  # so that w·x is spread around 0 for x around 0.5
    model = _linear_two_class_model(weights)
    x = 0.3 + 0.4 * torch.rand(200, 1, 8, 8)  # inside [0.3, 0.7]: the box never binds
    margin = (x.flatten(1) @ weights).abs()
    labels = (x.flatten(1) @ weights < 0).long()  # every example classified right
    epsilon = 0.01 if norm == "linf" else 0.1
    # The margin |w·x| can fall by epsilon·|w|_1 (Linf) or epsilon·|w|_2 (L2), no more.
    reach = epsilon * (weights.abs().sum() if norm == "linf" else weights.norm())
    foolable = margin < reach
    assert 0.2 < foolable.float().mean() < 0.8
    x_adv = ATTACKS[attack_name](model, x, labels, ThreatModel(norm=norm, epsilon=epsilon), None)
    fooled = ~correct_predictions(model, x_adv, labels)
    assert torch.equal(fooled, foolable)


class _Bowl(nn.Module):
    """Two classes; class 0 leads by 3 + |x - peak|^2, so it is never overtaken and the CE loss
    is highest at `peak` (a point inside the ball, where no fixed large step can stop)."""

    def __init__(self, peak: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("peak", peak)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = 3 + ((x - self.peak) ** 2).flatten(1).sum(1)
        return torch.stack([lead, torch.zeros_like(lead)], 1)


@pytest.mark.parametrize("norm", sorted(THREATS))
def test_step_size_halves_until_apgd_settles_on_a_maximum_inside_the_ball(norm):
    torch.manual_seed(0)
    threat = THREATS[norm]
    x = 0.3 + 0.4 * torch.rand(64, 1, 8, 8)
    offset = torch.randn(64, 1, 8, 8)
    length = perturbation_norms(offset, torch.zeros_like(offset), norm)
    peak = x + offset / length.view(-1, 1, 1, 1) * threat.epsilon / 2
    x_adv = apgd(_Bowl(peak), x, torch.zeros(64, dtype=torch.long), threat, generator=seeded())
    # Steps of the initial 2·epsilon would keep bouncing around the peak, about epsilon / 2 off.
    assert perturbation_norms(x_adv, peak, norm).max() < 0.1 * threat.epsilon


class _LossPeaksAwayFromTheRival(nn.Module):
    """Ten classes along one direction s = w·(x - 0.5), |w|_1 = 1: the label's logit is 0, a
    rival's is s (it wins for s > 0), eight decoys' are -0.21 - 1.5·s (never winning inside an
    Linf ball of 0.1). The decoys make the CE loss highest at s = -0.1, where the label wins."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", weights / weights.abs().sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x - 0.5).flatten(1) @ self.weights
        decoys = (-0.21 - 1.5 * s)[:, None].expand(-1, 8)
        return torch.cat([torch.zeros_like(s)[:, None], s[:, None], decoys], 1)


def test_an_example_fooled_on_the_way_is_returned_fooled_though_the_loss_peaks_elsewhere():
    torch.manual_seed(0)
    model = _LossPeaksAwayFromTheRival(torch.randn(64))
    x = torch.full((200, 1, 8, 8), 0.5)
    labels = torch.zeros(200, dtype=torch.long)
    threat = ThreatModel(norm="linf", epsilon=0.1)
    # About half the random starts have s > 0 (fooled) and then climb to the unfooled peak.
    once = apgd(model, x, labels, threat, steps=10, generator=seeded())
    thrice = apgd(model, x, labels, threat, steps=10, restarts=3, generator=seeded())
    fooled_once = ~correct_predictions(model, once, labels)
    fooled_thrice = ~correct_predictions(model, thrice, labels)
    assert 0.3 < float(fooled_once.float().mean()) < 0.7
    # A second and third start fool most of the rest (1 - 1/8 of all, give or take).
    assert float(fooled_thrice.float().mean()) > 0.75
    assert bool((fooled_thrice | ~fooled_once).all())


def test_dlr_loss_is_the_margin_over_the_spread_of_the_top_logits():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [1.0, 4.0, 0.0, 2.0]])
    labels = torch.tensor([0, 0])
    # Right: -(3 - 2) / (3 - 1). Wrong: -(1 - 4) / (4 - 1).
    assert torch.allclose(dlr_loss(logits, labels), torch.tensor([-0.5, 1.0]))


def test_dlr_losses_do_not_change_when_the_logits_are_shifted_and_scaled():
    logits = torch.randn(16, 10, generator=seeded())
    labels = torch.randint(0, 10, (16,), generator=seeded(1))
    targets = (labels + 1) % 10
    moved = 3.0 * logits + 5.0
    assert torch.allclose(dlr_loss(moved, labels), dlr_loss(logits, labels), atol=1e-5)
    assert torch.allclose(
        targeted_dlr_loss(moved, labels, targets),
        targeted_dlr_loss(logits, labels, targets),
        atol=1e-5,
    )


def test_targeted_dlr_loss_divides_by_top_minus_mean_of_third_and_fourth():
    logits = torch.tensor([[4.0, 3.0, 1.0, 2.0, 0.0]])
    # Sorted: 4, 3, 2, 1, 0. Label 0 against target 2: -(4 - 1) / (4 - (2 + 1) / 2).
    loss = targeted_dlr_loss(logits, torch.tensor([0]), torch.tensor([2]))
    assert torch.allclose(loss, torch.tensor([-3.0 / 2.5]))


def test_checkpoints_follow_the_papers_schedule():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99: each interval 0.03 shorter, >= 0.06.
    assert _checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert _checkpoints(10) == [3, 5, 6, 7, 8, 9]


def test_unknown_loss_is_rejected_with_the_choices(tiny_cnn, digits):
    x, labels = digits.test_tensors(n=4)
    with pytest.raises(ValueError, match="ce, dlr"):
        apgd(tiny_cnn, x, labels, THREATS["linf"], loss="hinge")
