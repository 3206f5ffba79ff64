"""Robustness evaluation: clean, FGSM and PGD-k accuracy, accuracy across epsilons, optional
AutoAttack, and the sanity checks that flag an evaluation not to be trusted.
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
from core.robust.autoattack import run_autoattack
from core.robust.data import ImageDataset
from core.robust.measure import Attack, accuracy, default_device, evaluation_subset
from core.robust.threat import ThreatModel

# Accuracy is measured at these multiples of the threat's epsilon unless asked otherwise.
EPSILON_MULTIPLES = (0.25, 0.5, 1.0, 1.5, 2.0)


@dataclass
class EvalReport:
    clean_accuracy: float
    robust_accuracy: float  # PGD-k with restarts at the threat's epsilon
    fgsm_accuracy: float
    autoattack_accuracy: float | None
    accuracy_by_epsilon: dict[float, float]
    threat: ThreatModel
    attack_steps: int
    restarts: int
    num_samples: int
    subset_indices: list[int]
    seed: int
    seconds: float
    checks: list[sanity.SanityCheck] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return sanity.warnings_from(self.checks)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (epsilons as strings: JSON keys are strings)."""
        data = asdict(self)
        data["accuracy_by_epsilon"] = {
            f"{eps:g}": acc for eps, acc in self.accuracy_by_epsilon.items()
        }
        data["warnings"] = self.warnings
        return data


def _num_classes(model: nn.Module, dataset: ImageDataset, device: torch.device) -> int:
    with torch.no_grad(), eval_mode(model):
        return int(model(dataset.tensors(1)[0].to(device)).shape[1])


def _large_epsilon(threat: ThreatModel, input_shape: tuple[int, int, int]) -> float:
    """A radius whose ball holds every image in [0,1]^d."""
    return 1.0 if threat.norm == "linf" else math.sqrt(math.prod(input_shape))


def evaluate(
    model: nn.Module,
    data: ImageDataset,
    threat: ThreatModel,
    *,
    attack_steps: int = 20,
    restarts: int = 1,
    epsilons: list[float] | None = None,
    autoattack: bool = False,
    max_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    sanity_checks: bool = True,
    device: str | torch.device | None = None,
) -> EvalReport:
    """Measure `model` on a fixed, seeded subset of `data` against `threat`.

    Every attack uses its own generator seeded by `seed`, so the same call gives the same
    numbers. The sanity checks cost about 40% more attack time; turn them off for a quick look.
    """
    started = time.perf_counter()
    target = torch.device(device) if device is not None else default_device()
    model = model.to(target)
    indices = evaluation_subset(data, max_samples=max_samples, seed=seed)
    subset = data.subset(indices)
    n = len(subset)
    num_classes = _num_classes(model, subset, target)

    def pgd_attack(at: ThreatModel) -> Attack:
        generator = torch.Generator(device=target).manual_seed(seed)
        return lambda x, y: pgd(model, x, y, at, restarts=restarts, generator=generator)

    def measure(attack: Attack | None) -> float:
        return accuracy(model, subset, attack, batch_size=batch_size, device=target)

    # The step size follows the 2.5·epsilon/steps rule at every radius and step count.
    pgd_threat = threat.with_steps(attack_steps)
    clean = measure(None)
    robust = measure(pgd_attack(pgd_threat))
    fgsm_accuracy = measure(lambda x, y: fgsm(model, x, y, threat))
    chosen = epsilons if epsilons is not None else [m * threat.epsilon for m in EPSILON_MULTIPLES]
    by_epsilon = {0.0: clean, threat.epsilon: robust}
    for epsilon in chosen:
        if epsilon > 0 and epsilon not in by_epsilon:
            by_epsilon[epsilon] = measure(pgd_attack(pgd_threat.with_epsilon(epsilon)))
    by_epsilon = dict(sorted(by_epsilon.items()))
    auto = None
    if autoattack:
        auto = measure(
            lambda x, y: run_autoattack(model, x, y, threat, num_classes=num_classes, seed=seed)
        )
    checks: list[sanity.SanityCheck] = []
    if sanity_checks:
        noise_generator = torch.Generator(device=target).manual_seed(seed)

        def noise_attack(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return random_noise(model, x, labels, threat, generator=noise_generator)

        few_steps = max(1, attack_steps // 4)
        large = _large_epsilon(threat, data.input_shape)
        checks = [
            sanity.accuracy_falls_with_epsilon(by_epsilon, num_samples=n),
            sanity.more_steps_not_weaker(
                accuracy_many=robust,
                steps_many=attack_steps,
                steps_few=few_steps,
                accuracy_few=measure(pgd_attack(pgd_threat.with_steps(few_steps))),
                num_samples=n,
            ),
            sanity.pgd_at_least_fgsm(
                pgd_accuracy=robust, fgsm_accuracy=fgsm_accuracy, num_samples=n
            ),
            sanity.pgd_beats_random_noise(
                pgd_accuracy=robust, noise_accuracy=measure(noise_attack), num_samples=n
            ),
            sanity.large_epsilon_breaks_model(
                accuracy_at_large=measure(pgd_attack(pgd_threat.with_epsilon(large))),
                large_epsilon=large,
                num_classes=num_classes,
            ),
        ]
    return EvalReport(
        clean_accuracy=clean,
        robust_accuracy=robust,
        fgsm_accuracy=fgsm_accuracy,
        autoattack_accuracy=auto,
        accuracy_by_epsilon=by_epsilon,
        threat=threat,
        attack_steps=attack_steps,
        restarts=restarts,
        num_samples=n,
        subset_indices=indices.tolist(),
        seed=seed,
        seconds=time.perf_counter() - started,
        checks=checks,
    )
