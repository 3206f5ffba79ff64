"""Training-time augmentation on image batches (NCHW tensors in [0,1]), seeded by a generator,
so that clean training with augmentation stays fixed by its seed alone."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# (batch, generator) -> augmented batch of the same shape: what train_clean's `augment` takes.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator, *, padding: int = 4, flip: bool = True
) -> torch.Tensor:
    """The usual CIFAR augmentation: each image zero-padded by `padding` pixels on every side
    and cropped back to its size at a random offset, then mirrored left-right with probability
    1/2 when `flip`. One draw per image, from `generator` (on the CPU), so a seed fixes it."""
    if x.ndim != 4:
        raise ValueError(f"random_crop_flip takes NCHW batches, got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0 and not flip:
        return x.clone()
    n, _, height, width = x.shape
    # Drawn on the CPU whatever x's device: the same seed gives the same crops on a GPU.
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    mirror = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    padded = F.pad(x, (padding, padding, padding, padding))
    # A gather with per-image index grids: one crop per image without a Python loop.
    rows = offsets[0].view(n, 1) + torch.arange(height).view(1, height)  # (n, H)
    columns = offsets[1].view(n, 1) + torch.arange(width).view(1, width)  # (n, W)
    columns = torch.where(mirror.view(n, 1), columns.flip(1), columns)
    rows, columns = rows.to(x.device), columns.to(x.device)
    batch_index = torch.arange(n, device=x.device).view(n, 1, 1)
    # padded[b, :, rows[b, i], columns[b, j]] -> (n, H, W, C), back to NCHW.
    channels_last = padded.permute(0, 2, 3, 1)
    cropped = channels_last[batch_index, rows.view(n, height, 1), columns.view(n, 1, width)]
    return cropped.permute(0, 3, 1, 2).contiguous()
