"""Datasets as the engine sees them: image tensors in [0,1] (NCHW) with integer labels.

`load_dataset(source)` is the one entry point: `builtin:digits`, `builtin:digits32`,
`builtin:<torchvision name>` (read from a data folder), an `.npz` file, or an ImageFolder archive
(`.zip`, `.tar.gz`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from core.robust.datasets.catalog import BUILTIN_DATASETS, MAX_CLASSES, BuiltinDataset
from core.robust.errors import DatasetError

__all__ = [
    "BUILTIN_DATASETS",
    "MAX_CLASSES",
    "BuiltinDataset",
    "DatasetSplits",
    "ImageDataset",
    "check_label_range",
    "load_dataset",
    "load_digits",
    "load_digits32",
    "split_every_fifth",
    "validation_holdout_size",
    "with_validation",
]


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


@dataclass(frozen=True)
class DatasetSplits:
    """A train and a test split of the same images, and what they are."""

    name: str
    train: ImageDataset
    test: ImageDataset
    num_classes: int
    # The upload's own validation split (`x_val`/`y_val`, an archive's `val/` beside `test/`),
    # or the holdout `with_validation` takes from train; None until then.
    val: ImageDataset | None = None

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


def load_dataset(
    source: str | Path,
    *,
    data_dir: str | Path | None = None,
    allow_download: bool = False,
    image_size: tuple[int, int] | None = None,
) -> DatasetSplits:
    """Load a dataset by name or path.

    - `builtin:digits`, `builtin:digits32`: always available.
    - `builtin:cifar10|cifar100|mnist|fashion_mnist|svhn`: read from `data_dir`; downloaded
      there only when `allow_download` is true.
    - a path to `.npz` (keys `x`, `y`, optional `x_test`, `y_test`).
    - a path to an ImageFolder archive (`.zip`, `.tar.gz`, `.tgz`): one folder per class;
      images resized to `image_size` (H, W) when given, else all must share one size.
    """
    text = str(source)
    if text == "builtin:digits":
        return load_digits()
    if text == "builtin:digits32":
        return load_digits32()
    if text.startswith("builtin:"):
        from core.robust.datasets.torchvision_data import load_torchvision_dataset

        return load_torchvision_dataset(
            text.removeprefix("builtin:"), data_dir=data_dir, allow_download=allow_download
        )
    path = Path(text)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {path} (and {text!r} is not a builtin: name)")
    name = path.name.lower()
    if name.endswith(".npz"):
        from core.robust.datasets.npz import load_npz_dataset

        return load_npz_dataset(path)
    if name.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
        from core.robust.datasets.imagefolder import load_image_folder_archive

        return load_image_folder_archive(path, image_size=image_size)
    raise DatasetError(
        f"unsupported dataset file {path.name!r}: "
        "expected .npz, .zip or .tar.gz, or a builtin: name"
    )
