"""The learning-rate probe: its grid, its budget, its choice, and a run that uses it."""

from __future__ import annotations

import pytest
import torch

from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.lr_probe import (
    MIN_STEPS,
    PROBE_BUDGET_FRACTION,
    LrProbe,
    ProbeTrial,
    choose_rate,
    plan_probe,
)
from core.robust.optimizers import BASE_RATES, candidate_rates
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=0.2, steps=3)


SGD_RATES = BASE_RATES["sgd"]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_grid_scales_with_the_batch_size(optimizer):
    rates = BASE_RATES[optimizer]
    assert candidate_rates(128, optimizer) == pytest.approx(list(rates))
    assert candidate_rates(256, optimizer) == pytest.approx([2 * rate for rate in rates])
    assert candidate_rates(32, optimizer) == pytest.approx([rate / 4 for rate in rates])


@pytest.mark.parametrize("batchnorm", [False, True])
def test_a_long_run_spends_at_most_a_tenth_of_its_training_on_the_probe(batchnorm):
    # CIFAR-sized: 45,000 training images, batch 128, 10 epochs of PGD-10.
    plan = plan_probe(
        batch_size=128, training_steps=352 * 10, passes_per_step=11, val_size=5000,
        val_attack_steps=10, batchnorm=batchnorm,
    )  # fmt: skip
    without = plan_probe(
        batch_size=128, training_steps=352 * 10, passes_per_step=11, val_size=5000,
        val_attack_steps=10,
    )  # fmt: skip
    # Recalibrating BatchNorm (a forward pass per trial step) is paid for with fewer steps.
    assert plan.steps > MIN_STEPS and (plan.steps < without.steps) == batchnorm
    assert plan.budget_fraction <= PROBE_BUDGET_FRACTION
    assert plan.budget_fraction > 0.9 * PROBE_BUDGET_FRACTION  # and uses what it may
    assert not plan.over_budget


def test_a_run_too_short_for_the_budget_gets_the_minimum_probe_and_says_it_costs_more():
    plan = plan_probe(
        batch_size=128, training_steps=20, passes_per_step=4, val_size=150, val_attack_steps=10
    )
    assert plan.steps == MIN_STEPS
    assert plan.eval_samples == 150
    assert plan.over_budget and plan.budget_fraction > PROBE_BUDGET_FRACTION


def trial(lr, clean, robust, kept=True, diverged=False):
    return ProbeTrial(
        lr=lr, val_clean_accuracy=clean, val_robust_accuracy=robust, kept_clean=kept,
        diverged=diverged,
    )  # fmt: skip


def test_the_most_robust_rate_that_kept_clean_accuracy_wins():
    trials = [
        trial(0.002, 0.98, 0.10),
        trial(0.006, 0.97, 0.30),
        trial(0.02, 0.90, 0.45, kept=False),  # more robust, but lost clean accuracy
        trial(0.06, 0.0, 0.0, kept=False, diverged=True),
    ]
    rate, reason = choose_rate(trials, eval_samples=256)
    assert rate == 0.006
    assert "kept clean accuracy" in reason


def test_rates_tied_within_noise_go_to_the_lowest():
    trials = [trial(0.002, 0.98, 0.290), trial(0.006, 0.97, 0.300), trial(0.02, 0.97, 0.305)]
    assert choose_rate(trials, eval_samples=256)[0] == 0.002  # 1.6 points apart: noise
    assert choose_rate(trials, eval_samples=100_000)[0] == 0.02  # on many images: not


def test_when_no_rate_kept_clean_accuracy_the_cleanest_wins():
    trials = [trial(0.02, 0.80, 0.4, kept=False), trial(0.06, 0.60, 0.5, kept=False)]
    rate, reason = choose_rate(trials, eval_samples=256)
    assert rate == 0.02 and "lost the least" in reason


def test_a_run_without_peak_lr_probes_and_trains_at_the_chosen_rate(pretrained_cnn, digits):
    train = digits.train.subset(torch.arange(512))
    val = digits.train.subset(torch.arange(512, 768))
    decisions = []
    progress = []
    result = adversarial_finetune(
        pretrained_cnn,
        train,
        THREAT,
        FinetuneConfig(epochs=2, batch_size=64, seed=1),
        val=val,
        device="cpu",
        on_decision=decisions.append,
        on_probe_batch=lambda *args: progress.append(args),
    )
    probe = result.lr_probe
    assert isinstance(probe, LrProbe) and decisions[0] is probe
    assert [t.lr for t in probe.trials] == pytest.approx(candidate_rates(64))
    assert result.peak_lr == probe.chosen_lr in [t.lr for t in probe.trials]
    # The schedule peaks at the chosen rate: half-way through a slow start, fast decay run.
    assert max(m.lr for m in result.history) == pytest.approx(probe.chosen_lr, rel=0.15)
    assert probe.steps_per_trial >= MIN_STEPS and probe.eval_samples == 256
    assert probe.gradient_passes > 0 and probe.seconds > 0
    assert progress[0][:4] == (1, len(SGD_RATES), 1, probe.steps_per_trial)
    assert progress[-1][:4] == (len(SGD_RATES), len(SGD_RATES), probe.steps_per_trial,
                                probe.steps_per_trial)  # fmt: skip
    # The probe's planned share of the job's work, for a progress bar that never goes back.
    share = progress[0][4]
    assert {args[4] for args in progress} == {share}
    assert share == pytest.approx(probe.budget_fraction / (1 + probe.budget_fraction), rel=0.05)


def test_a_given_peak_lr_skips_the_probe(pretrained_cnn, digits):
    train = digits.train.subset(torch.arange(256))
    decisions = []
    result = adversarial_finetune(
        pretrained_cnn,
        train,
        THREAT,
        FinetuneConfig(epochs=1, batch_size=64, peak_lr=0.05),
        val=digits.test,
        device="cpu",
        on_decision=decisions.append,
    )
    assert result.lr_probe is None and result.peak_lr == 0.05
    assert not [d for d in decisions if isinstance(d, LrProbe)]


def test_without_a_validation_split_the_fallback_rate_is_used_and_said(pretrained_cnn, digits):
    result = adversarial_finetune(
        pretrained_cnn,
        digits.train.subset(torch.arange(128)),
        THREAT,
        FinetuneConfig(epochs=1, batch_size=64),
        device="cpu",
    )
    assert result.lr_probe is not None and not result.lr_probe.trials
    assert "no validation split" in result.lr_probe.reason
    assert result.peak_lr == result.lr_probe.chosen_lr
