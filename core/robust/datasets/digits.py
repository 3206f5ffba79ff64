"""The bundled datasets: scikit-learn's 8x8 digits (`builtin:digits`) and the same digits as
3x32x32 colour images (`builtin:digits32`), both offline and deterministic."""

from __future__ import annotations

import functools

import numpy as np
import torch

from core.robust.datasets.splits import DatasetSplits, split_every_fifth

__all__ = ["DIGITS32_SEED", "load_digits", "load_digits32"]


def load_digits() -> DatasetSplits:
    """scikit-learn's bundled 8x8 digits (offline): 1,437 train and 360 test images, 1x8x8."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    # The raw pixels are integers 0..16.
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train, test = split_every_fifth(images, labels)
    return DatasetSplits(name="builtin:digits", train=train, test=test, num_classes=10)


DIGITS32_SEED = 32


@functools.cache
def _digits32_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per process (0.2 s past scikit-learn's import) and never handed out: every
    # split copies from it, so a caller writing into its images cannot change the next load.
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    ink = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    ink = torch.nn.functional.interpolate(ink, size=(32, 32), mode="bilinear").clamp_(0.0, 1.0)
    # A light stroke on a dark ground, each drawn per image, so the three channels differ and
    # colour alone says nothing of the class; the mix of the two stays inside [0,1].
    rng = np.random.default_rng(DIGITS32_SEED)
    count = len(bunch.target)
    stroke = torch.from_numpy(rng.uniform(0.55, 1.0, (count, 3, 1, 1)).astype(np.float32))
    ground = torch.from_numpy(rng.uniform(0.0, 0.45, (count, 3, 1, 1)).astype(np.float32))
    images = ground + (stroke - ground) * ink
    pixels = images.mul_(255.0).round_().to(torch.uint8)
    return pixels, torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))


def load_digits32() -> DatasetSplits:
    """The bundled digits as 3x32x32 colour images (offline, deterministic): each 8x8 digit
    upscaled (bilinear), stroke and ground tinted per image; the same split as `load_digits`."""
    images, labels = _digits32_tensors()
    train, test = split_every_fifth(images, labels)
    return DatasetSplits(name="builtin:digits32", train=train, test=test, num_classes=10)
