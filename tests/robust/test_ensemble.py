"""The ensemble's worst case: each attack only on the survivors, and never weaker than a member."""

from __future__ import annotations

import pytest
import torch

from core.robust.attacks import correct_predictions, fgsm, pgd
from core.robust.ensemble import PassCounter, Stage, preset_stages, worst_case
from core.robust.measure import survivors
from core.robust.threat import ThreatModel

DEVICE = torch.device("cpu")
# Between "nothing survives" and "everything survives" for the clean digits CNN.
THREAT = ThreatModel(norm="linf", epsilon=0.06)


def _correct(model, dataset):
    x, labels = dataset.tensors()
    return correct_predictions(model, x, labels)


def _alone(model, dataset, correct, attack):
    """The member run on every clean-correct example, as if it were the only attack."""
    return survivors(model, dataset, correct, attack, batch_size=64, device=DEVICE)


def test_skipping_fooled_examples_gives_exactly_the_result_of_attacking_all(tiny_cnn, digits):
    # Deterministic attacks (no random start): an example's outcome does not depend on which
    # others share its batch, so skipping the fooled ones must change nothing at all.
    test = digits.test.subset(torch.arange(300))
    fixed = ThreatModel(norm="linf", epsilon=0.06, random_start=False)
    stages = [
        Stage("FGSM", lambda x, y: fgsm(tiny_cnn, x, y, fixed)),
        Stage("PGD-3", lambda x, y: pgd(tiny_cnn, x, y, fixed.with_steps(3))),
        Stage("PGD-10", lambda x, y: pgd(tiny_cnn, x, y, fixed.with_steps(10))),
    ]
    correct = _correct(tiny_cnn, test)
    outcome = worst_case(tiny_cnn, test, stages, correct=correct, batch_size=64, device=DEVICE)
    every = correct.clone()
    for stage in stages:
        every &= _alone(tiny_cnn, test, correct, stage.attack)
    assert torch.equal(outcome.robust, every)
    attacked = [stage.attacked for stage in outcome.stages]
    assert attacked[0] == int(correct.sum())
    assert attacked[1] < attacked[0] and attacked[2] <= attacked[1]  # lost ones are skipped
    assert outcome.stages[-1].robust_accuracy == pytest.approx(float(every.float().mean()))


def test_standard_ensemble_is_at_least_as_strong_as_each_member(tiny_cnn, digits):
    test = digits.test.subset(torch.arange(300))
    n = len(test)
    stages = preset_stages(
        "standard", tiny_cnn, THREAT, attack_steps=10, restarts=1, num_classes=10, seed=0,
        device=DEVICE,
    )  # fmt: skip
    assert [stage.name for stage in stages] == ["PGD-10", "APGD-CE", "APGD-T (3 targets)"]
    correct = _correct(tiny_cnn, test)
    outcome = worst_case(tiny_cnn, test, stages, correct=correct, batch_size=64, device=DEVICE)
    ensemble = float(outcome.robust.float().mean())
    assert 0.05 < ensemble < float(correct.float().mean())  # the attack did something
    # Per example: robust to the ensemble implies robust to its first member, run on the same
    # examples in the same order (the later members ran on fewer: their random starts differ).
    assert not (outcome.robust & ~outcome.first_robust).any()
    assert not (outcome.robust & ~correct).any()
    for stage in stages:
        alone = float(_alone(tiny_cnn, test, correct, stage.attack).float().mean())
        assert ensemble <= alone + 1 / n, stage.name
    stronger = [result.robust_accuracy for result in outcome.stages]
    assert stronger == sorted(stronger, reverse=True)


def test_fast_preset_is_pgd_alone_and_autoattack_ends_with_it(tiny_cnn):
    fast = preset_stages(
        "fast", tiny_cnn, THREAT, attack_steps=7, restarts=2, num_classes=10, seed=0,
        device=DEVICE,
    )  # fmt: skip
    assert [stage.name for stage in fast] == ["PGD-7 x2 restarts"]
    auto = preset_stages(
        "autoattack", tiny_cnn, THREAT, attack_steps=7, restarts=1, num_classes=10, seed=0,
        device=DEVICE,
    )  # fmt: skip
    assert [stage.name for stage in auto] == ["PGD-7", "AutoAttack (standard)"]
    with pytest.raises(ValueError, match="attack must be one of"):
        preset_stages(
            "strongest", tiny_cnn, THREAT, attack_steps=7, restarts=1, num_classes=10, seed=0,
            device=DEVICE,
        )  # fmt: skip


def test_pass_counter_counts_every_image_an_attack_runs_through_the_model(tiny_cnn, digits):
    counted = PassCounter(tiny_cnn)
    x, labels = digits.test.tensors(40)
    pgd(counted, x, labels, THREAT.with_steps(5))
    assert counted.images == 40 * 5
