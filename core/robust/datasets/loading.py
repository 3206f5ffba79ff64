"""Datasets as the engine sees them: image tensors in [0,1] (NCHW) with integer labels.

`load_dataset(source)` is the one entry point: `builtin:digits`, `builtin:digits32`,
`builtin:<torchvision name>` (read from a data folder), an `.npz` file, an ImageFolder archive
(`.zip`, `.tar.gz`) or a WebDataset shard (`.tar`); an archive's large splits are streamed from
disk (core.robust.datasets.streamed). The types every loader builds live in
core.robust.datasets.splits and the builtin names in core.robust.datasets.catalog; both are
re-exported here.
"""

from __future__ import annotations

from pathlib import Path

from core.robust.datasets.catalog import BUILTIN_DATASETS, MAX_CLASSES, BuiltinDataset
from core.robust.datasets.digits import load_digits, load_digits32
from core.robust.datasets.imagefolder import (
    DEFAULT_STREAM_THRESHOLD_BYTES,
    load_image_folder_archive,
)
from core.robust.datasets.npz import load_npz_dataset
from core.robust.datasets.splits import (
    DatasetSplits,
    ImageDataset,
    TrainingImages,
    check_label_range,
    split_every_fifth,
    validation_holdout_size,
    with_validation,
)
from core.robust.datasets.torchvision_data import load_torchvision_dataset
from core.robust.errors import DatasetError

__all__ = [
    "BUILTIN_DATASETS",
    "MAX_CLASSES",
    "BuiltinDataset",
    "DatasetSplits",
    "ImageDataset",
    "TrainingImages",
    "check_label_range",
    "load_dataset",
    "load_digits",
    "load_digits32",
    "split_every_fifth",
    "validation_holdout_size",
    "with_validation",
]


def load_dataset(
    source: str | Path,
    *,
    data_dir: str | Path | None = None,
    allow_download: bool = False,
    image_size: tuple[int, int] | None = None,
    stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
    stream_workers: int = 0,
) -> DatasetSplits:
    """Load a dataset by name or path.

    - `builtin:digits`, `builtin:digits32`: always available.
    - `builtin:cifar10|cifar100|mnist|fashion_mnist|svhn`: read from `data_dir`; downloaded
      there only when `allow_download` is true.
    - a path to `.npz` (keys `x`, `y`, optional `x_test`, `y_test`).
    - a path to an ImageFolder archive (`.zip`, `.tar.gz`, `.tgz`, `.tar`): one folder per
      class, or WebDataset samples (`<key>.png` with `<key>.cls`);
      images resized to `image_size` (H, W) when given, else all must share one size. A split
      whose decoded pixels would pass `stream_threshold_bytes` is streamed from the extracted
      files, decoded by `stream_workers` DataLoader processes (0: in this one).
    """
    text = str(source)
    if text == "builtin:digits":
        return load_digits()
    if text == "builtin:digits32":
        return load_digits32()
    if text.startswith("builtin:"):
        return load_torchvision_dataset(
            text.removeprefix("builtin:"), data_dir=data_dir, allow_download=allow_download
        )
    path = Path(text)
    if not path.is_file():
        raise DatasetError(f"no dataset file at {path} (and {text!r} is not a builtin: name)")
    name = path.name.lower()
    if name.endswith(".npz"):
        return load_npz_dataset(path)
    if name.endswith((".zip", ".tar.gz", ".tgz", ".tar")):
        return load_image_folder_archive(
            path,
            image_size=image_size,
            stream_threshold_bytes=stream_threshold_bytes,
            stream_workers=stream_workers,
        )
    raise DatasetError(
        f"unsupported dataset file {path.name!r}: "
        "expected .npz, .zip or .tar.gz, or a builtin: name"
    )
