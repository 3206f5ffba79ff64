"""The checks of a trustworthy evaluation (Carlini et al. 2019, "On Evaluating Adversarial
Robustness"). A failed check is a sign of gradient masking: the attack, not the model, failed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SanityCheck:
    name: str
    passed: bool
    detail: str


def tolerance(num_samples: int) -> float:
    """Slack for noise between two attacks on the same examples: one point plus one example."""
    return 0.01 + 1.0 / max(num_samples, 1)


def accuracy_falls_with_epsilon(by_epsilon: dict[float, float], *, num_samples: int) -> SanityCheck:
    """A larger ball contains the smaller one: accuracy must not rise with epsilon."""
    rises = [
        (small, large)
        for small, large in zip(sorted(by_epsilon), sorted(by_epsilon)[1:], strict=False)
        if by_epsilon[large] > by_epsilon[small] + tolerance(num_samples)
    ]
    detail = "; ".join(
        f"accuracy {by_epsilon[large]:.3f} at epsilon {large:g} "
        f"> {by_epsilon[small]:.3f} at {small:g}"
        for small, large in rises
    )
    return SanityCheck("accuracy_falls_with_epsilon", not rises, detail or "monotone")


def more_steps_not_weaker(
    *, accuracy_many: float, steps_many: int, accuracy_few: float, steps_few: int, num_samples: int
) -> SanityCheck:
    passed = accuracy_many <= accuracy_few + tolerance(num_samples)
    return SanityCheck(
        "more_steps_not_weaker",
        passed,
        f"PGD-{steps_many}: {accuracy_many:.3f}, PGD-{steps_few}: {accuracy_few:.3f}",
    )


def pgd_at_least_fgsm(
    *, pgd_accuracy: float, fgsm_accuracy: float, num_samples: int
) -> SanityCheck:
    passed = pgd_accuracy <= fgsm_accuracy + tolerance(num_samples)
    return SanityCheck(
        "pgd_at_least_as_strong_as_fgsm",
        passed,
        f"PGD: {pgd_accuracy:.3f}, FGSM: {fgsm_accuracy:.3f}",
    )


def pgd_beats_random_noise(
    *, pgd_accuracy: float, noise_accuracy: float, num_samples: int
) -> SanityCheck:
    """Gradient-free noise must not do better than a gradient attack of the same radius."""
    passed = pgd_accuracy <= noise_accuracy + tolerance(num_samples)
    return SanityCheck(
        "pgd_at_least_as_strong_as_random_noise",
        passed,
        f"PGD: {pgd_accuracy:.3f}, random noise: {noise_accuracy:.3f}",
    )


def large_epsilon_breaks_model(
    *, accuracy_at_large: float, large_epsilon: float, num_classes: int
) -> SanityCheck:
    """A ball that holds every image must leave the model at (or below) chance."""
    chance = 1.0 / num_classes
    passed = accuracy_at_large <= chance + 0.05
    return SanityCheck(
        "large_epsilon_reaches_chance",
        passed,
        f"accuracy {accuracy_at_large:.3f} at epsilon {large_epsilon:g} (chance {chance:.3f})",
    )


def warnings_from(checks: list[SanityCheck]) -> list[str]:
    return [
        f"sanity check {check.name} failed ({check.detail}): possible gradient masking; "
        "the robust accuracy may be overstated"
        for check in checks
        if not check.passed
    ]
