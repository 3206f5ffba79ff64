"""Robustness evaluation: clean accuracy, the headline robust accuracy (the worst case over an
attack ensemble), FGSM, accuracy across epsilons, each with its 95% interval, and the sanity
checks that flag an evaluation not to be trusted.

What it costs: the ensemble attacks only the examples every earlier attack failed to fool
(core.robust.ensemble), every PGD drops an example from its later steps and restarts once it
is fooled (pgd's stop_when_fooled: a lost example stays lost), the epsilon curve attacks each
example only until its place on the curve is known (core.robust.curve), and the sanity checks
run on a subset of CHECK_SAMPLES examples, each check saying how many it used.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from core.robust import sanity
from core.robust.attacks import eval_mode, fgsm, pgd, random_noise
from core.robust.curve import robust_by_epsilon
from core.robust.datasets.splits import TrainingImages
from core.robust.ensemble import PassCounter, StageResult, preset_stages, worst_case
from core.robust.intervals import CONFIDENCE_LEVEL, wilson_interval
from core.robust.measure import (
    Attack,
    correct_under_attack,
    default_device,
    evaluation_subset,
    share,
    survivors,
)
from core.robust.threat import ThreatModel

# Accuracy is measured at these multiples of the threat's epsilon unless asked otherwise.
EPSILON_MULTIPLES = (0.25, 0.5, 1.0, 1.5, 2.0)
# The sanity checks compare attacks on this many of the evaluated examples: enough to see a
# masked gradient (it moves accuracy by tens of points: random noise fools 24 of these 100
# that PGD misses on a rounded input, 0 the reverse), a small part of the evaluation's cost.
CHECK_SAMPLES = 100


@dataclass
class EvalReport:
    clean_accuracy: float
    robust_accuracy: float  # the headline: the worst case over the preset's attacks
    pgd_accuracy: float  # PGD-k with restarts alone, the ensemble's first attack
    fgsm_accuracy: float
    autoattack_accuracy: float | None  # the headline, when the preset ends with AutoAttack
    accuracy_by_epsilon: dict[float, float]
    attack: str  # the preset: fast, standard or autoattack
    stages: list[StageResult]
    threat: ThreatModel
    attack_steps: int
    restarts: int
    num_samples: int
    subset_indices: list[int]
    seed: int
    seconds: float
    forward_passes: int  # images run through the model, every attack step counted
    checks: list[sanity.SanityCheck] = field(default_factory=list)
    confidence_level: float = CONFIDENCE_LEVEL

    @property
    def warnings(self) -> list[str]:
        return sanity.warnings_from(self.checks)

    def confidence_intervals(self) -> dict[str, Any]:
        """Each accuracy's 95% Wilson interval on num_samples, as [low, high]."""

        def interval(value: float) -> list[float]:
            return list(wilson_interval(value, self.num_samples))

        named = {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "pgd_accuracy": self.pgd_accuracy,
            "fgsm_accuracy": self.fgsm_accuracy,
            "autoattack_accuracy": self.autoattack_accuracy,
        }
        intervals: dict[str, Any] = {
            name: interval(value) for name, value in named.items() if value is not None
        }
        intervals["accuracy_by_epsilon"] = {
            f"{eps:g}": interval(acc) for eps, acc in self.accuracy_by_epsilon.items()
        }
        return intervals

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (epsilons as strings: JSON keys are strings)."""
        data = asdict(self)
        data["accuracy_by_epsilon"] = {
            f"{eps:g}": acc for eps, acc in self.accuracy_by_epsilon.items()
        }
        data["confidence_intervals"] = self.confidence_intervals()
        data["warnings"] = self.warnings
        return data


def _num_classes(model: nn.Module, dataset: TrainingImages, device: torch.device) -> int:
    with torch.no_grad(), eval_mode(model):
        return int(model(dataset.tensors(1)[0].to(device)).shape[1])


def _large_epsilon(threat: ThreatModel, input_shape: tuple[int, int, int]) -> float:
    """A radius whose ball holds every image in [0,1]^d."""
    return 1.0 if threat.norm == "linf" else math.sqrt(math.prod(input_shape))


def evaluate(
    model: nn.Module,
    data: TrainingImages,
    threat: ThreatModel,
    *,
    attack: str = "standard",
    attack_steps: int = 20,
    restarts: int = 1,
    epsilons: list[float] | None = None,
    max_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    sanity_checks: bool = True,
    device: str | torch.device | None = None,
) -> EvalReport:
    """Measure `model` on a fixed, seeded subset of `data` against `threat`.

    `attack` is the preset whose per-example worst case is the headline robust accuracy
    (core.robust.ensemble). Every attack uses its own generator seeded by `seed`, so the same
    call gives the same numbers.
    """
    started = time.perf_counter()
    target = torch.device(device) if device is not None else default_device()
    counted = PassCounter(model.to(target))
    indices = evaluation_subset(data, max_samples=max_samples, seed=seed)
    subset = data.subset(indices)
    num_classes = _num_classes(model, subset, target)

    def run(alive: torch.Tensor, attack_fn: Attack) -> torch.Tensor:
        return survivors(counted, subset, alive, attack_fn, batch_size=batch_size, device=target)

    def pgd_at(at: ThreatModel) -> Attack:
        generator = torch.Generator(device=target).manual_seed(seed)
        return lambda x, y: pgd(
            counted, x, y, at, restarts=restarts, generator=generator, stop_when_fooled=True
        )

    correct = correct_under_attack(counted, subset, None, batch_size=batch_size, device=target)
    stages = preset_stages(
        attack, counted, threat, attack_steps=attack_steps, restarts=restarts,
        num_classes=num_classes, seed=seed, device=target,
    )  # fmt: skip
    outcome = worst_case(
        counted, subset, stages, correct=correct, batch_size=batch_size, device=target
    )
    fgsm_robust = run(correct, lambda x, y: fgsm(counted, x, y, threat))
    pgd_threat = threat.with_steps(attack_steps)
    chosen = epsilons if epsilons is not None else [m * threat.epsilon for m in EPSILON_MULTIPLES]
    curve = robust_by_epsilon(
        counted, subset, epsilon=threat.epsilon, robust_at_epsilon=outcome.robust,
        correct=correct, radii=chosen,
        attack_at=lambda radius: pgd_at(pgd_threat.with_epsilon(radius)),
        batch_size=batch_size, device=target,
    )  # fmt: skip
    by_epsilon = {radius: share(mask) for radius, mask in curve.items()}
    checks: list[sanity.SanityCheck] = []
    if sanity_checks:
        checks = _sanity_checks(
            counted, subset, threat, correct=correct, pgd_robust=outcome.first_robust,
            fgsm_robust=fgsm_robust,
            radii=sorted(curve), attack_steps=attack_steps, num_classes=num_classes,
            input_shape=data.input_shape, pgd_at=pgd_at, seed=seed, batch_size=batch_size,
            device=target,
        )  # fmt: skip
    robust = share(outcome.robust)
    return EvalReport(
        clean_accuracy=share(correct),
        robust_accuracy=robust,
        pgd_accuracy=share(outcome.first_robust),
        fgsm_accuracy=share(fgsm_robust),
        autoattack_accuracy=robust if attack == "autoattack" else None,
        accuracy_by_epsilon=by_epsilon,
        attack=attack,
        stages=outcome.stages,
        threat=threat,
        attack_steps=attack_steps,
        restarts=restarts,
        num_samples=len(subset),
        subset_indices=indices.tolist(),
        seed=seed,
        seconds=time.perf_counter() - started,
        forward_passes=counted.images,
        checks=checks,
    )


def _sanity_checks(
    model: nn.Module,
    subset: TrainingImages,
    threat: ThreatModel,
    *,
    correct: torch.Tensor,
    pgd_robust: torch.Tensor,
    fgsm_robust: torch.Tensor,
    radii: list[float],
    attack_steps: int,
    num_classes: int,
    input_shape: tuple[int, int, int],
    pgd_at: Any,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> list[sanity.SanityCheck]:
    """The checks of core.robust.sanity, the costly ones on CHECK_SAMPLES of the examples.

    Each compares attacks on the same examples: the check subset's own PGD-k result is the
    headline PGD's restricted to it, so no check re-runs the headline attack.
    """
    chosen = evaluation_subset(subset, max_samples=CHECK_SAMPLES, seed=seed + 1)
    few = subset.subset(chosen)
    k = len(few)
    alive = correct[chosen]

    def resisted(attack_fn: Attack) -> torch.Tensor:
        return survivors(model, few, alive, attack_fn, batch_size=batch_size, device=device)

    few_steps = max(1, attack_steps // 4)
    pgd_few = threat.with_steps(few_steps)
    noise_generator = torch.Generator(device=device).manual_seed(seed)
    independent = {0.0: alive}
    for radius in radii:
        if radius > 0:
            independent[radius] = resisted(pgd_at(pgd_few.with_epsilon(radius)))
    large = _large_epsilon(threat, input_shape)
    # A ball that holds every image needs no fine search: a few long steps cross it.
    at_large = resisted(pgd_at(pgd_few.with_epsilon(large)))
    return [
        sanity.accuracy_falls_with_epsilon(independent, attack=f"PGD-{few_steps}"),
        sanity.more_steps_not_weaker(
            many=pgd_robust[chosen],
            steps_many=attack_steps,
            few=independent[threat.epsilon],
            steps_few=few_steps,
        ),
        sanity.pgd_at_least_fgsm(pgd=pgd_robust, fgsm=fgsm_robust),
        sanity.pgd_beats_random_noise(
            pgd=pgd_robust[chosen],
            noise=resisted(
                lambda x, y: random_noise(model, x, y, threat, generator=noise_generator)
            ),
        ),
        sanity.large_epsilon_breaks_model(
            accuracy_at_large=share(at_large),
            large_epsilon=large,
            num_classes=num_classes,
            num_samples=k,
        ),
    ]
