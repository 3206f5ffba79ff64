"""Training-time augmentation on image batches (NCHW tensors in [0,1]), seeded by a generator,
so that clean training with augmentation stays fixed by its seed alone."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from core.robust.augmentation_choice import AUGMENTATIONS
from core.robust.errors import InvalidConfig

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


# The share of the image's area a resized crop keeps. torchvision's ImageNet recipe draws from
# (0.08, 1) for 90+ epochs from scratch; a fine-tuning run is a few epochs from a model trained
# on whole images, and an 8% crop of a 96-pixel image blown up to full size is a blur it never
# sees at test time, so the gentler (0.35, 1) keeps the crops near the evaluated images.
RESIZED_CROP_SCALE = (0.35, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = RESIZED_CROP_SCALE,
    ratio: tuple[float, float] = RESIZED_CROP_RATIO,
    flip: bool = True,
) -> torch.Tensor:
    """RandomResizedCrop back to the input size, then a left-right flip with probability 1/2
    when `flip`: each image's crop covers a share of its area drawn from `scale` with an aspect
    ratio drawn log-uniformly from `ratio` (its sides clipped to the image's), at a uniform
    position, resampled bilinearly. Draws on the CPU from `generator`, so a seed fixes it."""
    if x.ndim != 4:
        raise ValueError(f"random_resized_crop takes NCHW batches, got shape {tuple(x.shape)}")
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"scale must be within (0, 1] and ratio > 0, got {scale}, {ratio}")
    n = x.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * torch.rand(n, generator=generator))
    # Sides as fractions of the image's width and height.
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    left = (1 - width) * torch.rand(n, generator=generator)
    top = (1 - height) * torch.rand(n, generator=generator)
    mirror = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    # One affine map per image from output to input in grid_sample's [-1, 1] coordinates: the
    # whole batch in one call (7x faster than a loop of F.interpolate on 128 images of
    # 3x32x32 on a CPU); a negative x scale mirrors within the crop.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.where(mirror, -width, width)
    theta[:, 0, 2] = 2 * left + width - 1
    theta[:, 1, 1] = height
    theta[:, 1, 2] = 2 * top + height - 1
    grid = F.affine_grid(theta.to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    resampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Bilinear weights sum to 1 only up to rounding: keep the pixels inside [0, 1].
    return resampled.clamp_(0.0, 1.0)


def augmentation_for(name: str) -> Augment | None:
    """The batch transform an augmentation's name (core.robust.augmentation_choice) stands for;
    None for "none"."""
    if name not in AUGMENTATIONS:
        raise InvalidConfig(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")
    if name == "standard":
        return random_crop_flip
    if name == "imagenet":
        return random_resized_crop
    return None
