"""Ordinary (clean) training: how the demo and the benchmarks make the pretrained model that
adversarial fine-tuning then hardens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.robust.datasets.augment import Augment
from core.robust.datasets.splits import TrainingImages
from core.robust.measure import default_device
from core.robust.models.robust_model import copy_model
from core.robust.schedules import cosine


def train_clean(
    model: nn.Module,
    train: TrainingImages,
    *,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | torch.device | None = None,
    augment: Augment | None = None,
    optimizer: str = "sgd",
) -> nn.Module:
    """A trained copy of `model`: SGD with momentum (or, `optimizer="adamw"`, AdamW: what
    vision transformers train with) under a cosine schedule, on clean images.

    `augment(batch, generator)` (e.g. `core.robust.datasets.augment.random_crop_flip`) transforms
    each training batch; its generator is seeded from `seed`, apart from the data order's, so the
    run stays fixed by its seed. Without it the batches are used as they are.
    """
    target = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    model = copy_model(model).to(target).train()
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be sgd or adamw, got {optimizer!r}")
    step_rule: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        if optimizer == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    )
    steps_per_epoch = -(-len(train) // batch_size)
    schedule = cosine(peak_lr=lr, total_steps=epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(seed)
    # Its own stream: turning augmentation on leaves the data order (and the init) unchanged.
    augment_generator = torch.Generator().manual_seed(seed + 1)
    step = 0
    for _ in range(epochs):
        for x, labels in train.batches(batch_size, generator=order):
            for group in step_rule.param_groups:
                group["lr"] = schedule(step)
            x = x.to(target)
            if augment is not None:
                x = augment(x, augment_generator)
            loss = F.cross_entropy(model(x), labels.to(target))
            step_rule.zero_grad(set_to_none=True)
            loss.backward()
            step_rule.step()
            step += 1
    return model.eval()
