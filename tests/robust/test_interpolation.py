"""The interpolation back toward the starting weights: when no epoch kept validation clean
accuracy, the run hands back the most robust mix of its best epoch's weights with the
starting ones that keeps it, found by bisection along the line between them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.robust.attacks import pgd
from core.robust.datasets.loading import DatasetSplits, load_digits, with_validation
from core.robust.finetune import FinetuneConfig, FinetuneResult, adversarial_finetune
from core.robust.interpolation import SEARCH_STEPS, mixed_state, search_line
from core.robust.measure import accuracy
from core.robust.models.architectures import build_architecture
from core.robust.pretrain import train_clean
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=0.2, steps=5)
# A rate high enough that no epoch of this short run keeps clean accuracy within a 1-point drop.
LOSSY = FinetuneConfig(epochs=3, peak_lr=0.1, max_clean_drop=0.01)


def test_a_mix_is_the_straight_line_between_the_two_states_with_the_tuned_counters():
    start = {"w": torch.zeros(3), "n": torch.tensor(5)}
    tuned = {"w": torch.tensor([2.0, 4.0, -8.0]), "n": torch.tensor(9)}
    assert torch.equal(mixed_state(start, tuned, 0.0)["w"], start["w"])
    assert torch.equal(mixed_state(start, tuned, 1.0)["w"], tuned["w"])
    assert torch.allclose(mixed_state(start, tuned, 0.25)["w"], torch.tensor([0.5, 1.0, -2.0]))
    assert mixed_state(start, tuned, 0.25)["n"].item() == 9


@pytest.mark.parametrize("threshold", [0.08, 0.3, 0.62, 0.97])
def test_the_bisection_finds_the_most_tuned_mix_that_keeps_clean_accuracy(threshold):
    """Clean accuracy falling linearly along the line: kept up to `threshold`; the search
    answers the largest kept fraction within its resolution, and the state of that mix."""
    start, tuned = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    scored: list[float] = []

    def score(state):
        fraction = state["w"].item()
        scored.append(fraction)
        return 1.0 - fraction, fraction  # (clean, robust)

    interpolation, state = search_line(
        start, tuned, from_epoch=2, tuned_scores=(0.0, 1.0), score=score,
        kept=lambda clean: clean >= 1.0 - threshold,
    )  # fmt: skip
    assert len(scored) == SEARCH_STEPS == len(interpolation.trials)
    resolution = 1 / 2**SEARCH_STEPS
    assert interpolation.fraction is not None
    assert threshold - resolution <= interpolation.fraction <= threshold
    assert state["w"].item() == pytest.approx(interpolation.fraction)
    assert interpolation.val_robust_accuracy == pytest.approx(interpolation.fraction)


def test_when_no_mix_keeps_clean_accuracy_the_tuned_weights_stay():
    start, tuned = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    interpolation, state = search_line(
        start, tuned, from_epoch=3, tuned_scores=(0.4, 0.6),
        score=lambda s: (0.1, 0.5), kept=lambda clean: False,
    )  # fmt: skip
    assert interpolation.fraction is None and state is tuned
    assert (interpolation.val_clean_accuracy, interpolation.val_robust_accuracy) == (0.4, 0.6)
    assert "stay" in interpolation.message


@pytest.fixture(scope="module")
def held_out() -> DatasetSplits:
    """The digits with a validation split the pretrained model below never saw."""
    return with_validation(load_digits(), fraction=0.1, seed=0)


@pytest.fixture(scope="module")
def pretrained(held_out: DatasetSplits) -> nn.Module:
    torch.manual_seed(0)
    net = build_architecture("builtin:digits_cnn", input_shape=(1, 8, 8), num_classes=10)
    return train_clean(net, held_out.train, epochs=15, seed=0, device="cpu")


def _lossy_run(model: nn.Module, data: DatasetSplits, **overrides) -> tuple[FinetuneResult, list]:
    decisions: list[object] = []
    result = adversarial_finetune(
        model,
        data.train,
        THREAT,
        FinetuneConfig(**{**LOSSY.__dict__, **overrides}),
        val=data.val,
        device="cpu",
        on_decision=decisions.append,
    )
    return result, decisions


def _pgd_accuracy(model: nn.Module, data) -> float:
    generator = torch.Generator().manual_seed(0)
    return accuracy(
        model, data, lambda x, y: pgd(model, x, y, THREAT.with_steps(10), generator=generator),
        batch_size=256, device="cpu",
    )  # fmt: skip


def test_a_run_that_lost_clean_accuracy_hands_back_a_mix_that_keeps_it(pretrained, held_out):
    result, decisions = _lossy_run(pretrained, held_out)
    without, _ = _lossy_run(pretrained, held_out, weight_interpolation=False)
    val = held_out.val
    assert val is not None

    interpolation = result.interpolation
    assert interpolation is not None and interpolation.fraction is not None, decisions
    assert decisions[-1] is interpolation and interpolation.from_epoch == result.best_epoch
    reference = result.reference_clean_accuracy
    best = result.best
    assert best is not None and best.val_clean_accuracy < reference - LOSSY.max_clean_drop
    assert result.best_meets_clean_constraint
    # What is handed back is the mix, measured again: clean accuracy kept, and more robust
    # than the starting model on the same validation images and on the unseen test split.
    clean = accuracy(result.model, val, batch_size=256, device="cpu")
    assert clean == pytest.approx(interpolation.val_clean_accuracy)
    assert clean >= reference - LOSSY.max_clean_drop - 1e-9
    for data in (val, held_out.test):
        assert _pgd_accuracy(result.model, data) > _pgd_accuracy(pretrained, data)

    # Switched off, the same run hands back its best epoch: clean accuracy lost.
    assert without.interpolation is None and not without.best_meets_clean_constraint
    assert without.best_epoch == result.best_epoch
    assert accuracy(without.model, val, batch_size=256, device="cpu") < clean


def test_a_run_that_kept_clean_accuracy_is_not_interpolated(pretrained, held_out):
    result, decisions = _lossy_run(pretrained, held_out, peak_lr=0.01, max_clean_drop=0.05)
    assert result.best_meets_clean_constraint and result.interpolation is None
    assert decisions == []


def test_of_the_mixes_that_kept_clean_accuracy_the_most_robust_is_handed_back():
    """Robust accuracy need not rise all the way along the line: a less tuned mix that kept
    clean accuracy and resisted more wins over the most tuned one that kept it."""
    start, tuned = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    robust_at = {0.5: 0.44, 0.75: 0.46, 0.875: 0.42, 0.9375: 0.40}

    def score(state):
        fraction = state["w"].item()
        return (0.95 if fraction < 0.9 else 0.88), robust_at[fraction]

    interpolation, state = search_line(
        start, tuned, from_epoch=3, tuned_scores=(0.87, 0.38), score=score,
        kept=lambda clean: clean >= 0.9,
    )  # fmt: skip
    assert [t.fraction for t in interpolation.trials] == [0.5, 0.75, 0.875, 0.9375]
    assert interpolation.fraction == 0.75 and interpolation.val_robust_accuracy == 0.46
    assert state["w"].item() == 0.75
