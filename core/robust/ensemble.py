"""The headline robust accuracy: the per-example worst case over an ensemble of attacks.

An example counts as robust only when every attack of the preset failed to fool it. The
attacks run in order, each only on the examples that all earlier ones failed to fool (and
never on one misclassified clean), as AutoAttack does (Croce & Hein 2020): the worst case
costs the first attack on the clean-correct examples plus the others on the survivors only.

Presets (`evaluation.attack`):
- fast: PGD-k with restarts, cross-entropy; what the first version reported.
- standard (default): PGD-k, then APGD-CE, then APGD-T (targeted DLR, against the
  STANDARD_TARGET_CLASSES most likely wrong classes), all at k steps. DLR is invariant to the
  logits' scale, so it sees through a saturated softmax that blinds cross-entropy.
- autoattack: PGD-k, then the full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square,
  torchattacks' implementation) on PGD's survivors; the reference, and slow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from core.robust.apgd import apgd, apgd_targeted
from core.robust.attack_presets import ATTACK_PRESETS
from core.robust.attacks import pgd
from core.robust.autoattack import run_autoattack
from core.robust.datasets.splits import TrainingImages
from core.robust.measure import Attack, share, survivors
from core.robust.threat import ThreatModel

__all__ = [
    "ATTACK_PRESETS",
    "STANDARD_TARGET_CLASSES",
    "PassCounter",
    "Stage",
    "StageResult",
    "WorstCase",
    "preset_stages",
    "worst_case",
]

# AutoAttack's standard version targets 9 classes at 100 steps each; 3 at k steps keeps the
# headline within noise of it at a fraction of the cost (benchmarks/eval_cost.py).
STANDARD_TARGET_CLASSES = 3


@dataclass(frozen=True)
class Stage:
    """One attack of an ensemble, named as the report shows it."""

    name: str
    attack: Attack


@dataclass(frozen=True)
class StageResult:
    name: str
    attacked: int  # examples this attack ran on: those every earlier one failed to fool
    robust_accuracy: float  # after this attack and all earlier ones
    seconds: float


@dataclass(frozen=True)
class WorstCase:
    robust: torch.Tensor  # per example: no attack of the ensemble fooled it
    first_robust: torch.Tensor  # per example: the first attack (PGD-k) did not fool it
    stages: list[StageResult]


def preset_stages(
    preset: str,
    model: nn.Module,
    threat: ThreatModel,
    *,
    attack_steps: int,
    restarts: int,
    num_classes: int,
    seed: int,
    device: torch.device,
) -> list[Stage]:
    """The attacks of `preset` at the threat's radius, each with its own seeded generator."""
    if preset not in ATTACK_PRESETS:
        raise ValueError(f"attack must be one of {', '.join(ATTACK_PRESETS)}, got {preset!r}")
    at = threat.with_steps(attack_steps)

    def generator() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(seed)

    def pgd_attack(rng: torch.Generator) -> Attack:
        return lambda x, y: pgd(
            model, x, y, at, restarts=restarts, generator=rng, stop_when_fooled=True
        )

    label = f"PGD-{attack_steps}" + (f" x{restarts} restarts" if restarts > 1 else "")
    stages = [Stage(label, pgd_attack(generator()))]
    if preset == "standard":
        ce_rng, targeted_rng = generator(), generator()
        targets = min(STANDARD_TARGET_CLASSES, num_classes - 1)
        stages.append(
            Stage(
                "APGD-CE",
                lambda x, y: apgd(model, x, y, at, steps=attack_steps, loss="ce", generator=ce_rng),
            )
        )

        def targeted(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return apgd_targeted(
                model, x, y, at, steps=attack_steps, target_classes=targets, generator=targeted_rng
            )

        stages.append(Stage(f"APGD-T ({targets} targets)", targeted))
    elif preset == "autoattack":
        stages.append(
            Stage(
                "AutoAttack (standard)",
                lambda x, y: run_autoattack(
                    model, x, y, threat, num_classes=num_classes, seed=seed
                ),
            )
        )
    return stages


def worst_case(
    model: nn.Module,
    dataset: TrainingImages,
    stages: list[Stage],
    *,
    correct: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> WorstCase:
    """Run `stages` in order, each on the survivors of all earlier ones (and of `correct`)."""
    alive = correct.clone()
    first_robust = alive
    results = []
    for index, stage in enumerate(stages):
        started = time.perf_counter()
        attacked = int(alive.sum())
        alive = survivors(model, dataset, alive, stage.attack, batch_size=batch_size, device=device)
        if index == 0:
            first_robust = alive.clone()
        results.append(
            StageResult(
                name=stage.name,
                attacked=attacked,
                robust_accuracy=share(alive),
                seconds=time.perf_counter() - started,
            )
        )
    return WorstCase(robust=alive, first_robust=first_robust, stages=results)


class PassCounter(nn.Module):
    """`model`, counting the images it is run on: an evaluation's cost in forward passes.

    Every attack step is one forward and one backward pass over its images, so this counts
    what an attack costs whatever its implementation (ours or torchattacks').
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += int(x.shape[0])
        return self.model(x)
