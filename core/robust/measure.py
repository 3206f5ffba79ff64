"""Accuracy of a model on a dataset, clean or under an attack, batch by batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.robust.attacks import correct_predictions, pgd
from core.robust.datasets.splits import TrainingImages
from core.robust.threat import ThreatModel

# attack(x, labels) -> adversarial x, on the model's device.
Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def evaluation_subset(dataset: TrainingImages, *, max_samples: int, seed: int) -> torch.Tensor:
    """Sorted indices of a fixed, seeded subset of at most `max_samples` examples."""
    if max_samples >= len(dataset):
        return torch.arange(len(dataset))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(dataset), generator=generator)[:max_samples]
    return chosen.sort().values


def correct_under_attack(
    model: nn.Module,
    dataset: TrainingImages,
    attack: Attack | None,
    *,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """Per example: classified right clean and (when `attack` is given) after the attack.

    An example counts as robust only when it was right to begin with, so robust accuracy can
    never exceed clean accuracy because a random start happened to fix a mistake.
    """
    results = []
    for x, labels in dataset.batches(batch_size):
        x, labels = x.to(device), labels.to(device)
        correct = correct_predictions(model, x, labels)
        if attack is not None:
            correct &= correct_predictions(model, attack(x, labels), labels)
        results.append(correct.cpu())
    return torch.cat(results) if results else torch.zeros(0, dtype=torch.bool)


def survivors(
    model: nn.Module,
    dataset: TrainingImages,
    alive: torch.Tensor,
    attack: Attack,
    *,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    """`alive` (a boolean per example of `dataset`) less the examples that `attack` fools.

    Only the alive examples are attacked: an example already lost (misclassified clean, or
    fooled by an earlier attack) costs nothing more, as in AutoAttack's evaluation.
    """
    result = alive.clone()
    targets = alive.nonzero().flatten()
    for start in range(0, len(targets), batch_size):
        chosen = targets[start : start + batch_size]
        x, labels = dataset.batch(chosen)
        x, labels = x.to(device), labels.to(device)
        result[chosen] = correct_predictions(model, attack(x, labels), labels).cpu()
    return result


def share(correct: torch.Tensor) -> float:
    """The fraction of True in a boolean per example (0 for no examples)."""
    return float(correct.float().mean()) if len(correct) else 0.0


def accuracy(
    model: nn.Module,
    dataset: TrainingImages,
    attack: Attack | None = None,
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> float:
    """Fraction of `dataset` classified right, clean or under `attack`."""
    device = device or model_device(model)
    correct = correct_under_attack(model, dataset, attack, batch_size=batch_size, device=device)
    return share(correct)


def clean_and_robust(
    model: nn.Module,
    subset: TrainingImages,
    threat: ThreatModel,
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> tuple[float, float]:
    """Clean and PGD accuracy on a fixed subset, with its own fixed attack noise."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def attack(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pgd(model, x, labels, threat, generator=generator)

    clean = accuracy(model, subset, batch_size=batch_size, device=device)
    robust = accuracy(model, subset, attack, batch_size=batch_size, device=device)
    return clean, robust


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
