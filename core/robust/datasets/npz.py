"""Read an uploaded `.npz` (keys `x`, `y`, optional `x_test`/`y_test` and `x_val`/`y_val`) into
dataset splits."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from core.robust.datasets.catalog import MAX_CLASSES
from core.robust.datasets.splits import DatasetSplits, ImageDataset, split_every_fifth
from core.robust.errors import DatasetError

__all__ = ["MAX_ARRAY_BYTES", "load_npz_dataset"]

# A compressed .npz of zeros is tiny on disk and huge in memory: headers are read first and
# the arrays refused when together they would need more than this.
MAX_ARRAY_BYTES = 4 * 1024**3
_KEYS = ("x", "y", "x_test", "y_test", "x_val", "y_val")


def load_npz_dataset(path: Path) -> DatasetSplits:
    """Load images and labels from an `.npz` file, without ever unpickling.

    `x` is uint8 NHWC (or NHW grayscale) or float NCHW in [0, 1]; `y` holds integer labels
    >= 0, one per image. `x_test`/`y_test` (both or neither) give the test split; without them
    every fifth image is the test split. `x_val`/`y_val` (both or neither) give the validation
    split (the best epoch is chosen on it); without them the job holds one out of train.
    num_classes is the largest label + 1.
    """
    path = Path(path)
    arrays = _read_arrays(path)
    train_images = _images("x", arrays["x"])
    train_labels = _labels("y", arrays["y"], images_key="x", count=len(train_images))
    if "x_test" in arrays:
        train = ImageDataset(train_images, train_labels)
        test = _extra_split(arrays, "test", like=train_images)
    else:
        train, test = split_every_fifth(train_images, train_labels)
    val = _extra_split(arrays, "val", like=train_images) if "x_val" in arrays else None
    largest = int(
        max(train.labels.max(), test.labels.max(), -1 if val is None else val.labels.max())
    )
    if largest < 1:
        keys = "keys 'y' and 'y_test' hold" if "y_test" in arrays else "key 'y' holds"
        raise DatasetError(f"{keys} only the label {largest}; at least 2 classes are needed")
    return DatasetSplits(name=path.name, train=train, test=test, num_classes=largest + 1, val=val)


def _extra_split(arrays: dict[str, np.ndarray], split: str, *, like: torch.Tensor) -> ImageDataset:
    """The `x_<split>`/`y_<split>` images and labels, checked to match the training images."""
    images_key, labels_key = f"x_{split}", f"y_{split}"
    images = _images(images_key, arrays[images_key])
    if images.shape[1:] != like.shape[1:]:
        raise DatasetError(
            f"key {images_key!r} has images of shape {tuple(images.shape[1:])} (C, H, W) "
            f"but key 'x' has {tuple(like.shape[1:])}; they must match"
        )
    if images.dtype != like.dtype:
        raise DatasetError(
            f"key {images_key!r} has dtype {arrays[images_key].dtype} but key 'x' has "
            f"{arrays['x'].dtype}; store both as uint8 or both as float"
        )
    labels = _labels(labels_key, arrays[labels_key], images_key=images_key, count=len(images))
    return ImageDataset(images, labels)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DatasetError(f"{path.name} holds one array, not an .npz of named arrays")
        with loaded as archive:
            present = [key for key in _KEYS if key in archive.files]
            missing = [key for key in ("x", "y") if key not in present]
            if missing:
                raise DatasetError(
                    f"{path.name} is missing key {missing[0]!r} (found keys: {archive.files}); "
                    "expected 'x' (images) and 'y' (labels), optionally 'x_test'/'y_test' and "
                    "'x_val'/'y_val'"
                )
            for split in ("test", "val"):
                if (f"x_{split}" in present) != (f"y_{split}" in present):
                    given = f"x_{split}" if f"x_{split}" in present else f"y_{split}"
                    absent = f"y_{split}" if given == f"x_{split}" else f"x_{split}"
                    raise DatasetError(
                        f"{path.name} has key {given!r} but not {absent!r}: give both or neither"
                    )
            total = sum(_declared_bytes(archive, key) for key in present)
            if total > MAX_ARRAY_BYTES:
                raise DatasetError(
                    f"{path.name} holds arrays of {total} bytes in memory, more than "
                    f"{MAX_ARRAY_BYTES}"
                )
            return {key: archive[key] for key in present}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        # np.load on a pickle, or on a file that is no array at all, lands here.
        raise DatasetError(f"cannot read {path.name} as .npz (no pickle allowed): {exc}") from exc


def _declared_bytes(archive: np.lib.npyio.NpzFile, key: str) -> int:
    """Bytes `key` needs once loaded, from its .npy header alone; refuses object arrays."""
    members = archive.zip
    assert members is not None, "read while the .npz is open"
    member = f"{key}.npy" if f"{key}.npy" in members.namelist() else key
    with members.open(member) as header:
        version = np.lib.format.read_magic(header)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(header)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(header)
        else:
            raise DatasetError(f"key {key!r} uses .npy format {version}, expected 1.0 or 2.0")
    if dtype.hasobject:
        raise DatasetError(
            f"key {key!r} is an object array (dtype {dtype}), which can only be loaded with "
            "pickle; save a numeric array instead (uint8 images, integer labels)"
        )
    if dtype.fields is not None:
        raise DatasetError(f"key {key!r} is a structured array (dtype {dtype}); expected numbers")
    return math.prod(shape) * dtype.itemsize


def _images(key: str, array: np.ndarray) -> torch.Tensor:
    """NCHW images: uint8 kept as uint8, float checked to lie in [0, 1] and made float32."""
    if array.ndim == 0 or len(array) == 0:
        raise DatasetError(f"key {key!r} holds no images (shape {array.shape})")
    if array.dtype == np.uint8:
        return _uint8_images(key, array)
    if np.issubdtype(array.dtype, np.floating):
        return _float_images(key, array)
    raise DatasetError(
        f"key {key!r} has dtype {array.dtype}; expected uint8 (N, H, W, C) pixels 0..255 "
        "or float (N, C, H, W) in [0, 1]"
    )


def _channels_at(array: np.ndarray, axis: int) -> bool:
    """A batch of images with 1 or 3 channels on `axis` (3: NHWC, 1: NCHW)."""
    return array.ndim == 4 and array.shape[axis] in (1, 3)


def _uint8_images(key: str, array: np.ndarray) -> torch.Tensor:
    if array.ndim == 3:
        return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(1)
    if not _channels_at(array, 3):
        hint = ""
        if _channels_at(array, 1):
            hint = " (it looks like NCHW: transpose it to NHWC, or store float32 in [0, 1])"
        raise DatasetError(
            f"key {key!r} is uint8 of shape {array.shape}; uint8 images must be (N, H, W, C) "
            f"with C = 1 or 3, or (N, H, W) grayscale{hint}"
        )
    nhwc = torch.from_numpy(np.ascontiguousarray(array))
    return nhwc.permute(0, 3, 1, 2).contiguous()


def _float_images(key: str, array: np.ndarray) -> torch.Tensor:
    if not _channels_at(array, 1):
        hint = " (it looks like NHWC: transpose it to NCHW)" if _channels_at(array, 3) else ""
        raise DatasetError(
            f"key {key!r} is {array.dtype} of shape {array.shape}; float images must be "
            f"(N, C, H, W) with C = 1 or 3{hint}"
        )
    if not np.isfinite(array).all():
        raise DatasetError(f"key {key!r} has NaN or infinite values; float images must be in [0,1]")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise DatasetError(
            f"key {key!r} has values in [{low:g}, {high:g}]; float images must be in [0, 1] "
            "(divide 0..255 pixels by 255, or store them as uint8 NHWC)"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _labels(key: str, array: np.ndarray, *, images_key: str, count: int) -> torch.Tensor:
    if not np.issubdtype(array.dtype, np.integer):
        raise DatasetError(f"key {key!r} has dtype {array.dtype}; expected integer class labels")
    if array.ndim != 1:
        raise DatasetError(f"key {key!r} has shape {array.shape}; expected one label per image")
    if len(array) != count:
        raise DatasetError(
            f"key {key!r} has {len(array)} labels but key {images_key!r} has {count} images"
        )
    # Checked before the cast to int64: a uint64 label past int64 would wrap round to < 0.
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= MAX_CLASSES:
        bad = low if low < 0 else high
        index = int(np.flatnonzero(array == bad)[0])
        raise DatasetError(
            f"key {key!r} has the label {bad} (at index {index}); labels must be integers "
            f"0 <= label < {MAX_CLASSES}"
        )
    return torch.from_numpy(array.astype(np.int64))
