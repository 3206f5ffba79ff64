"""torchvision's standard datasets (CIFAR, MNIST, SVHN) read from a local folder as uint8 NCHW."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.error import URLError

import numpy as np
import torch
from torchvision import datasets

from core.robust.datasets.splits import DatasetSplits, ImageDataset
from core.robust.errors import DatasetError

__all__ = ["TORCHVISION_DATASETS", "load_torchvision_dataset"]

Tensors = tuple[torch.Tensor, torch.Tensor]


class _Loader(Protocol):
    def __call__(self, root: str, *, train: bool, download: bool) -> Tensors: ...


@dataclass(frozen=True)
class _Source:
    """How one torchvision dataset is read: its files' layout (for messages) and its loader."""

    layout: str
    num_classes: int
    load: _Loader


def _load_cifar(cls: type[datasets.CIFAR10]) -> _Loader:
    def load(root: str, *, train: bool, download: bool) -> Tensors:
        dataset = cls(root, train=train, download=download)
        # torchvision keeps CIFAR as NHWC uint8; the engine stores NCHW.
        images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
        return images.contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)

    return load


def _load_mnist(cls: type[datasets.MNIST]) -> _Loader:
    def load(root: str, *, train: bool, download: bool) -> Tensors:
        dataset = cls(root, train=train, download=download)
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()

    return load


def _load_svhn(root: str, *, train: bool, download: bool) -> Tensors:
    dataset = datasets.SVHN(root, split="train" if train else "test", download=download)
    # torchvision has already moved SVHN to NCHW and label 10 to 0.
    images = torch.from_numpy(np.ascontiguousarray(dataset.data))
    return images, torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))


TORCHVISION_DATASETS: dict[str, _Source] = {
    "cifar10": _Source("cifar-10-batches-py/", 10, _load_cifar(datasets.CIFAR10)),
    "cifar100": _Source("cifar-100-python/", 100, _load_cifar(datasets.CIFAR100)),
    "mnist": _Source("MNIST/raw/ (idx files, unzipped)", 10, _load_mnist(datasets.MNIST)),
    "fashion_mnist": _Source(
        "FashionMNIST/raw/ (idx files, unzipped)", 10, _load_mnist(datasets.FashionMNIST)
    ),
    "svhn": _Source("train_32x32.mat and test_32x32.mat", 10, _load_svhn),
}


def load_torchvision_dataset(
    name: str, *, data_dir: str | Path | None, allow_download: bool
) -> DatasetSplits:
    """Read `name` (cifar10, cifar100, mnist, fashion_mnist, svhn) from `data_dir`.

    Downloads it there only when `allow_download` is true; otherwise a missing folder or file is
    a DatasetError naming the folder. Images come back as uint8 NCHW (MNIST: 1x28x28).
    """
    source = TORCHVISION_DATASETS.get(name)
    if source is None:
        known = ", ".join(f"builtin:{known}" for known in ("digits", *TORCHVISION_DATASETS))
        raise DatasetError(f"unknown builtin dataset {name!r}; known: {known}")
    how_to_fix = (
        f"put the dataset files there in torchvision's layout ({source.layout}) or set "
        "ROBUSTIFY_ALLOW_DOWNLOAD=true on a machine that is online"
    )
    if data_dir is None:
        raise DatasetError(
            f"builtin:{name} needs a data folder, and none is set (ROBUSTIFY_DATA_DIR): "
            f"{how_to_fix}"
        )
    folder = Path(data_dir)
    if not folder.is_dir() and not allow_download:
        raise DatasetError(f"builtin:{name}: data folder {folder} does not exist; {how_to_fix}")
    try:
        train_images, train_labels = source.load(str(folder), train=True, download=allow_download)
        test_images, test_labels = source.load(str(folder), train=False, download=allow_download)
    except (RuntimeError, OSError, URLError, ValueError) as exc:
        # torchvision says "Dataset not found or corrupted" (RuntimeError) or fails downloading;
        # its advice to pass download=True means nothing to someone using the service.
        reason = str(exc).split(" You can use download=True")[0].rstrip(". ")
        raise DatasetError(
            f"builtin:{name} could not be read from {folder} ({reason}): {how_to_fix}"
        ) from exc
    return DatasetSplits(
        name=f"builtin:{name}",
        train=ImageDataset(train_images, train_labels),
        test=ImageDataset(test_images, test_labels),
        num_classes=source.num_classes,
    )
