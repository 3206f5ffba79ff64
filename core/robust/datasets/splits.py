"""The engine's in-memory datasets: ImageDataset (images in [0,1], NCHW, with integer labels),
DatasetSplits (train, test and an optional validation split), and the splits' own operations
(label checks, the every-fifth test split, the validation holdout). Every loader builds these.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch

from core.robust.datasets.catalog import MAX_CLASSES
from core.robust.errors import DatasetError

__all__ = [
    "VALIDATION_MAX_IMAGES",
    "VALIDATION_MIN_IMAGES",
    "DatasetSplits",
    "ImageDataset",
    "TrainingImages",
    "check_label_range",
    "split_every_fifth",
    "validation_holdout_size",
    "with_validation",
]


class TrainingImages(Protocol):
    """What the engine asks of a split: held in memory (ImageDataset) or read from disk as it
    goes (core.robust.datasets.streamed.StreamedImageDataset). Batches are float32 in [0,1]."""

    @property
    def labels(self) -> torch.Tensor: ...

    def __len__(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def subset(self, indices: torch.Tensor) -> TrainingImages: ...


class ImageDataset:
    """Images held in memory, as uint8 (0..255) or float (0..1) NCHW, with int64 labels.

    uint8 storage keeps large datasets (CIFAR: 150 MB instead of 600 MB) small; batches are
    always handed out as float32 in [0,1].
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4:
            raise DatasetError(f"images must be NCHW, got shape {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(
                f"labels must be one integer per image: {len(images)} images, "
                f"labels of shape {tuple(labels.shape)}"
            )
        if images.dtype not in (torch.uint8, torch.float32):
            images = images.float()
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float32 in [0,1]) and labels at `indices`."""
        images = self.images[indices]
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return images, self.labels[indices]

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` images and labels (all of them when `n` is None)."""
        count = len(self) if n is None else min(n, len(self))
        return self.batch(torch.arange(count))

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in order, or shuffled by `generator` (so a seed fixes the order)."""
        if generator is None:
            order = torch.arange(len(self))
        else:
            order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start : start + batch_size])

    def subset(self, indices: torch.Tensor) -> ImageDataset:
        return ImageDataset(self.images[indices], self.labels[indices])


# What a loader's splits are: ImageDataset for the in-memory loaders (digits, .npz, torchvision),
# TrainingImages where a split may be streamed (ImageFolder archives).
Images = TypeVar("Images", bound=TrainingImages)


@dataclass(frozen=True)
class DatasetSplits(Generic[Images]):
    """A train and a test split of the same images, and what they are."""

    name: str
    train: Images
    test: Images
    num_classes: int
    # The upload's own validation split (`x_val`/`y_val`, an archive's `val/` beside `test/`),
    # or the holdout `with_validation` takes from train; None until then.
    val: Images | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise DatasetError(
                f"dataset {self.name} has {self.num_classes} classes; at most {MAX_CLASSES} "
                "are supported"
            )
        splits = [("train", self.train), ("test", self.test)]
        if self.val is not None:
            splits.append(("validation", self.val))
        for split, data in splits:
            if len(data):
                check_label_range(f"the {split} split", data.labels, num_classes=self.num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.input_shape

    def test_tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.test.tensors(n)


VALIDATION_MIN_IMAGES = 100
VALIDATION_MAX_IMAGES = 5_000


def validation_holdout_size(train_size: int, fraction: float) -> int:
    """How many training images `with_validation` holds out: `fraction` of them, clamped to
    100..5,000, and never more than half, so that a tiny set still has most of it to train on."""
    wanted = round(fraction * train_size)
    wanted = min(max(wanted, VALIDATION_MIN_IMAGES), VALIDATION_MAX_IMAGES)
    return min(wanted, train_size // 2)


def with_validation(data: DatasetSplits, *, fraction: float, seed: int) -> DatasetSplits:
    """The splits with a validation split: the upload's own when it has one, else a seeded
    holdout from train (which then keeps the rest). The test split is never touched, so
    validation and test cannot overlap; the same seed always holds out the same images."""
    if not 0 < fraction <= 0.5:
        raise DatasetError(f"validation_fraction must be in (0, 0.5], got {fraction}")
    if data.val is not None:
        return data
    size = validation_holdout_size(len(data.train), fraction)
    if size < 1:
        raise DatasetError(
            f"dataset {data.name} has {len(data.train)} training images: too few to hold out "
            "a validation split"
        )
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    held_out, kept = order[:size].sort().values, order[size:].sort().values
    return replace(data, train=data.train.subset(kept), val=data.train.subset(held_out))


def check_label_range(
    where: str, labels: torch.Tensor | np.ndarray, *, num_classes: int = MAX_CLASSES
) -> None:
    """DatasetError naming the first label outside 0 <= label < num_classes (in `where`)."""
    values = torch.as_tensor(labels)
    if values.numel() == 0:
        return
    bad = (values < 0) | (values >= num_classes)
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise DatasetError(
            f"{where} has the label {int(values[index])} (at index {index}); labels must be "
            f"integers 0 <= label < {num_classes}"
        )


def split_every_fifth(
    images: torch.Tensor, labels: torch.Tensor
) -> tuple[ImageDataset, ImageDataset]:
    """The project's fixed split for data without its own test set: index % 5 == 0 is test."""
    is_test = torch.arange(len(labels)) % 5 == 0
    return ImageDataset(images[~is_test], labels[~is_test]), ImageDataset(
        images[is_test], labels[is_test]
    )
