"""The guards: a climbing or non-finite loss and a collapsed clean accuracy make the run step
back to its best weights at a lower rate, then stop early; a healthy run is left alone."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from core.robust.errors import TrainingDiverged
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.guards import (
    BACKOFF_FACTOR,
    LOSS_FACTOR,
    MAX_BACKOFFS,
    WINDOW,
    GuardDecision,
    GuardState,
)
from core.robust.measure import accuracy
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=0.2, steps=3)


def test_the_loss_guard_fires_on_a_climb_above_the_starting_loss_and_not_below():
    state = GuardState(start_loss=3.0, num_classes=10)
    for _ in range(WINDOW):
        assert state.observe_loss(8.9) is None  # below 3 x 3.0
    state = GuardState(start_loss=3.0, num_classes=10)
    signs = [state.observe_loss(9.5) for _ in range(WINDOW)]
    assert signs[:-1] == [None] * (WINDOW - 1)
    assert signs[-1] == ("loss_spike", pytest.approx(9.5), LOSS_FACTOR * 3.0)
    # A small starting loss (a nearly robust model) is floored at the uniform guess's loss.
    state = GuardState(start_loss=0.1, num_classes=10)
    assert all(state.observe_loss(5.0) is None for _ in range(WINDOW))
    assert GuardState().observe_loss(math.nan)[0] == "loss_not_finite"


def test_a_collapse_is_a_fall_to_near_chance():
    assert GuardState(num_classes=10).collapse_threshold(0.9) == pytest.approx(0.3)
    assert GuardState(num_classes=2).collapse_threshold(0.9) == pytest.approx(0.6)


def test_an_absurd_rate_is_stepped_back_then_stopped_early_with_the_starting_weights(
    pretrained_cnn, digits
):
    train = digits.train.subset(torch.arange(512))
    val = digits.train.subset(torch.arange(512, 768))
    decisions: list[GuardDecision] = []
    result = adversarial_finetune(
        pretrained_cnn,
        train,
        THREAT,
        FinetuneConfig(epochs=3, batch_size=64, peak_lr=1e6, epsilon_rampup_fraction=0.0),
        val=val,
        device="cpu",
        on_decision=decisions.append,
    )
    assert [d.action for d in decisions] == ["stepped_back"] * MAX_BACKOFFS + ["stopped"]
    assert [d.lr_scale for d in decisions] == pytest.approx(
        [BACKOFF_FACTOR, BACKOFF_FACTOR**2, BACKOFF_FACTOR**2]
    )
    assert all(d.restored_epoch == 0 for d in decisions)  # no epoch was good enough
    assert decisions[0].reason in ("loss_spike", "loss_not_finite")
    assert result.stopped_early and result.guard_decisions == decisions
    assert len(result.history) < 3
    # What comes back is the starting model, not the wreck: same clean accuracy.
    assert accuracy(result.model, val) == pytest.approx(accuracy(pretrained_cnn, val))


def test_without_guards_an_absurd_rate_still_fails_with_training_diverged(pretrained_cnn, digits):
    train = digits.train.subset(torch.arange(256))
    config = FinetuneConfig(
        epochs=2, batch_size=64, peak_lr=1e12, schedule="constant", epsilon_rampup_fraction=0.0,
        guards=False,
    )  # fmt: skip
    with pytest.raises(TrainingDiverged, match="loss became"):
        adversarial_finetune(pretrained_cnn, train, THREAT, config, device="cpu")


def test_a_model_whose_own_loss_is_not_finite_fails_at_once_even_guarded(pretrained_cnn, digits):
    broken = copy.deepcopy(pretrained_cnn)
    with torch.no_grad():
        for parameter in broken.parameters():
            parameter.fill_(math.nan)
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        adversarial_finetune(
            broken, digits.train.subset(torch.arange(128)), THREAT,
            FinetuneConfig(epochs=1, batch_size=64, peak_lr=0.05), device="cpu",
        )  # fmt: skip


def test_a_collapsed_epoch_is_never_chosen_and_makes_the_run_step_back(pretrained_cnn, digits):
    train = digits.train.subset(torch.arange(512))
    val = digits.train.subset(torch.arange(512, 768))
    decisions: list[GuardDecision] = []
    # Constant 0.5 without ramp-up: epoch 1 wrecks clean accuracy without a NaN.
    result = adversarial_finetune(
        pretrained_cnn,
        train,
        ThreatModel(norm="linf", epsilon=0.3, steps=3),
        FinetuneConfig(
            epochs=3, batch_size=64, peak_lr=0.5, schedule="constant",
            epsilon_rampup_fraction=0.0, max_clean_drop=0.03,
        ),
        val=val,
        device="cpu",
        on_decision=decisions.append,
    )  # fmt: skip
    collapses = [d for d in decisions if d.reason == "clean_collapse"]
    assert collapses, [d.message for d in decisions]
    threshold = GuardState(num_classes=10).collapse_threshold(result.reference_clean_accuracy)
    collapsed = [m.epoch for m in result.history if m.val_clean_accuracy < threshold]
    assert collapses[0].epoch in collapsed and collapses[0].value < threshold
    assert result.best_epoch not in collapsed or len(collapsed) == len(result.history)


def test_a_healthy_run_takes_no_guard_decision(pretrained_cnn, digits):
    decisions: list[object] = []
    result = adversarial_finetune(
        pretrained_cnn,
        digits.train.subset(torch.arange(512)),
        THREAT,
        FinetuneConfig(epochs=2, batch_size=64, peak_lr=0.05),
        val=digits.train.subset(torch.arange(512, 768)),
        device="cpu",
        on_decision=decisions.append,
    )
    # (Whether the best epoch kept clean accuracy is another matter: the interpolation's.)
    guard_decisions = [d for d in decisions if isinstance(d, GuardDecision)]
    assert guard_decisions == [] and not result.stopped_early and len(result.history) == 2
