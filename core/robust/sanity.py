"""The checks of a trustworthy evaluation (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"). A failed check is a sign of gradient masking: the attack, not the model, failed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from core.robust.measure import share


@dataclass(frozen=True)
class SanityCheck:
    name: str
    passed: bool
    detail: str
    num_samples: int  # the examples the check's attacks ran on


def accuracy_falls_with_epsilon(
    by_epsilon: dict[float, torch.Tensor], *, attack: str
) -> SanityCheck:
    """A larger ball contains the smaller one: accuracy must not rise with epsilon.

    `by_epsilon` holds, per radius, whether each example resisted an independent `attack` at
    that radius: a curve built by one outward search is monotone by construction and would
    pass for nothing. A rise counts when the larger radius lost significantly fewer of the
    same examples than the smaller one (the paired test below).
    """
    radii = sorted(by_epsilon)
    rises = []
    for small, large in itertools.pairwise(radii):
        if _weaker_attack_wins(by_epsilon[large], by_epsilon[small])[0]:
            rises.append(
                f"accuracy {share(by_epsilon[large]):.3f} at epsilon {large:g} "
                f"> {share(by_epsilon[small]):.3f} at {small:g}"
            )
    num_samples = len(by_epsilon[radii[0]]) if radii else 0
    detail = f"{attack} at each radius: " + ("; ".join(rises) or "monotone")
    return SanityCheck("accuracy_falls_with_epsilon", not rises, detail, num_samples)


def _weaker_attack_wins(strong: torch.Tensor, weak: torch.Tensor) -> tuple[bool, int, int]:
    """Did the attack expected to be weaker fool significantly more of the same examples?

    `strong` and `weak` say, per example, whether it resisted each attack. Only the examples
    where the two disagree carry evidence (McNemar's test): `beaten` resisted the strong
    attack but not the weak one, `held` the reverse. Two attacks with random starts disagree
    on a few examples by chance; the weak one wins only when `beaten - held` exceeds two
    standard deviations of that difference under a fair coin, plus one example.
    """
    beaten = int((strong & ~weak).sum())
    held = int((weak & ~strong).sum())
    return beaten - held > 2.0 * math.sqrt(beaten + held) + 1.0, beaten, held


def _paired_check(
    name: str, strong: torch.Tensor, weak: torch.Tensor, strong_name: str, weak_name: str
) -> SanityCheck:
    failed, beaten, held = _weaker_attack_wins(strong, weak)
    n = len(strong)
    detail = (
        f"{strong_name}: {share(strong):.3f}, {weak_name}: {share(weak):.3f}; "
        f"{beaten} examples resisted {strong_name} but not {weak_name}, {held} the reverse"
    )
    return SanityCheck(name, not failed, detail, n)


def more_steps_not_weaker(
    *, many: torch.Tensor, steps_many: int, few: torch.Tensor, steps_few: int
) -> SanityCheck:
    """PGD with more steps must not be beaten by PGD with fewer, on the same examples."""
    return _paired_check(
        "more_steps_not_weaker", many, few, f"PGD-{steps_many}", f"PGD-{steps_few}"
    )


def pgd_at_least_fgsm(*, pgd: torch.Tensor, fgsm: torch.Tensor) -> SanityCheck:
    """An iterative attack must not be beaten by its own first step."""
    return _paired_check("pgd_at_least_as_strong_as_fgsm", pgd, fgsm, "PGD", "FGSM")


def pgd_beats_random_noise(*, pgd: torch.Tensor, noise: torch.Tensor) -> SanityCheck:
    """Gradient-free noise must not do better than a gradient attack of the same radius."""
    return _paired_check(
        "pgd_at_least_as_strong_as_random_noise", pgd, noise, "PGD", "random noise"
    )


def large_epsilon_breaks_model(
    *, accuracy_at_large: float, large_epsilon: float, num_classes: int, num_samples: int
) -> SanityCheck:
    """A ball that holds every image must leave the model at (or below) chance."""
    chance = 1.0 / num_classes
    passed = accuracy_at_large <= chance + 0.05
    return SanityCheck(
        "large_epsilon_reaches_chance",
        passed,
        f"accuracy {accuracy_at_large:.3f} at epsilon {large_epsilon:g} (chance {chance:.3f})",
        num_samples,
    )


def warnings_from(checks: list[SanityCheck]) -> list[str]:
    return [
        f"sanity check {check.name} failed ({check.detail}): possible gradient masking; "
        "the robust accuracy may be overstated"
        for check in checks
        if not check.passed
    ]
