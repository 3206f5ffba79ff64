"""A dataset of image files on disk, decoded as batches are drawn (torch DataLoader workers,
pinned memory on CUDA), so that memory does not grow with the number of images.

It hands out the same batches as core.robust.datasets.splits.ImageDataset would for the same
files: the same order for the same generator, the same pixels (core.robust.datasets.image_files).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from core.robust.datasets.image_files import ImageFormat, decode_image
from core.robust.datasets.splits import ImageDataset
from core.robust.errors import DatasetError

__all__ = ["DEFAULT_IN_MEMORY_BYTES", "StreamedImageDataset"]

# A subset at most this large (decoded) is held in memory by `subset`: the validation split and
# the probe's batches are bounded, the training split minus a holdout is not.
DEFAULT_IN_MEMORY_BYTES = 512 * 1024**2


class _ImageFiles(Dataset[tuple[torch.Tensor, int]]):
    """The files as a map-style torch dataset: index -> (uint8 CHW pixels, label)."""

    def __init__(
        self, files: np.ndarray, labels: torch.Tensor, root: Path, image_format: ImageFormat
    ) -> None:
        self.files, self.labels, self.root, self.image_format = files, labels, root, image_format

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = decode_image(Path(os.fsdecode(self.files[index])), self.root, self.image_format)
        return torch.from_numpy(pixels), int(self.labels[index])


def _stack_uint8(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([pixels for pixels, _ in items])
    return images, torch.tensor([label for _, label in items], dtype=torch.long)


def _stack_float(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    # Converted in the worker, so the pinned buffer is the float batch the model takes; the same
    # operation as ImageDataset.batch, so the same values.
    images, labels = _stack_uint8(items)
    return images.float().div_(255.0), labels


def _encoded_paths(files: Sequence[str | Path] | np.ndarray) -> np.ndarray:
    """The paths as one array of bytes (numpy's "S" dtype), as a subset's are already."""
    if isinstance(files, np.ndarray) and files.dtype.kind == "S":
        return files
    return np.array([os.fsencode(str(path)) for path in files], dtype=np.bytes_)


class StreamedImageDataset:
    """Image files with int64 labels, decoded on the fly; batches are float32 in [0,1] NCHW.

    `workers` decoding processes (0: decode in this process), each `prefetch_factor` batches
    ahead; batches land in pinned memory when CUDA is available. `scratch` is whatever owns the
    files' folder (a TemporaryDirectory): kept alive as long as this dataset and its subsets.
    """

    def __init__(
        self,
        files: Sequence[str | Path] | np.ndarray,
        labels: torch.Tensor,
        *,
        root: Path,
        image_format: ImageFormat,
        workers: int = 0,
        prefetch_factor: int = 2,
        in_memory_bytes: int = DEFAULT_IN_MEMORY_BYTES,
        scratch: object = None,
    ) -> None:
        if labels.ndim != 1 or len(labels) != len(files):
            raise DatasetError(
                f"labels must be one integer per image: {len(files)} files, "
                f"labels of shape {tuple(labels.shape)}"
            )
        if workers < 0 or prefetch_factor < 1:
            raise ValueError(
                f"workers must be >= 0 and prefetch_factor >= 1, got {workers}, {prefetch_factor}"
            )
        # One numpy buffer of encoded paths, not a list of str: forked DataLoader workers that
        # touch a Python object copy its page (reference counts), so a list of 100,000 names
        # is copied into every worker as it reads them (measured by benchmarks/data_scale.py).
        self.files = _encoded_paths(files)
        self.labels = labels.long()
        self.root, self.image_format = Path(root), image_format
        self.workers, self.prefetch_factor = workers, prefetch_factor
        self.in_memory_bytes = in_memory_bytes
        self._scratch = scratch
        self._images = _ImageFiles(self.files, self.labels, self.root, image_format)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.image_format.input_shape

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float32 in [0,1]) and labels at `indices`, decoded in this process."""
        chosen = [int(index) for index in indices.reshape(-1)]
        if not chosen:
            empty = torch.empty((0, *self.input_shape), dtype=torch.float32)
            return empty, self.labels[:0]
        return _stack_float([self._images[index] for index in chosen])

    def tensors(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` images and labels (all of them when `n` is None)."""
        count = len(self) if n is None else min(n, len(self))
        return self.batch(torch.arange(count))

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in order, or shuffled by `generator`: the same draw as ImageDataset.batches,
        so the same seed gives the same order."""
        if generator is None:
            order = torch.arange(len(self))
        else:
            order = torch.randperm(len(self), generator=generator)
        yield from self._loader(order, batch_size, as_float=True)

    def subset(self, indices: torch.Tensor) -> ImageDataset | StreamedImageDataset:
        """The images at `indices`: in memory when they fit `in_memory_bytes`, else streamed."""
        if len(indices) * self.image_format.image_bytes <= self.in_memory_bytes:
            return self.loaded(indices)
        chosen = [int(index) for index in indices]
        return StreamedImageDataset(
            self.files[np.asarray(chosen, dtype=np.int64)],
            self.labels[indices],
            root=self.root,
            image_format=self.image_format,
            workers=self.workers,
            prefetch_factor=self.prefetch_factor,
            in_memory_bytes=self.in_memory_bytes,
            scratch=self._scratch,
        )

    def loaded(self, indices: torch.Tensor) -> ImageDataset:
        """The images at `indices` decoded into memory (uint8, as the in-memory loader keeps)."""
        images = torch.empty((len(indices), *self.input_shape), dtype=torch.uint8)
        start = 0
        for pixels, _labels in self._loader(indices, 256, as_float=False):
            images[start : start + len(pixels)] = pixels
            start += len(pixels)
        return ImageDataset(images, self.labels[indices])

    def _loader(
        self, order: torch.Tensor, batch_size: int, *, as_float: bool
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        positions = order.tolist()
        plan = [
            positions[start : start + batch_size] for start in range(0, len(positions), batch_size)
        ]
        parallel = self.workers > 0
        loader = DataLoader(
            self._images,
            batch_sampler=plan,
            num_workers=self.workers,
            collate_fn=_stack_float if as_float else _stack_uint8,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=self.prefetch_factor if parallel else None,
            # Each call has its own order (a new batch plan), so a new set of workers; starting
            # them (fork) costs milliseconds against an epoch's decoding.
            persistent_workers=False,
            # The loader draws a seed for its workers; from its own generator, not the global
            # one, so streaming leaves the training's random draws where the in-memory path does.
            generator=torch.Generator(),
        )
        yield from loader
