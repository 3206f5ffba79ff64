"""Read an uploaded ImageFolder archive (one folder per class) into uint8 NCHW dataset splits."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.robust.datasets.archives import safe_extract
from core.robust.datasets.catalog import MAX_CLASSES
from core.robust.datasets.splits import DatasetSplits, ImageDataset, split_every_fifth
from core.robust.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "load_image_folder_archive"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Decoded pixels are held in memory; this bounds what a small archive of tiny, highly compressed
# but huge images can make us allocate.
MAX_DECODED_BYTES = 4 * 1024**3
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


@dataclass(frozen=True)
class _Labelled:
    """Image files of one split, in a fixed order, with their class indices."""

    files: list[Path]
    labels: list[int]


def load_image_folder_archive(
    path: Path, *, image_size: tuple[int, int] | None = None
) -> DatasetSplits:
    """Load a `.zip`/`.tar.gz` of class folders (optionally under `train/` and `test/` or `val/`).

    Classes are numbered by sorted folder name. Images become RGB unless all are grayscale (then
    one channel), resized to `image_size` (H, W) when given, else all must share one size.
    Without a test folder, every fifth image is the test split. With `train/`, `val/` and
    `test/`, `val/` is the validation split (the best epoch is chosen on it); with only `train/`
    and `val/`, `val/` is the test split (as torchvision's ImageNet names it) and the job holds
    a validation split out of train.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="robustify-imagefolder-") as scratch:
        extracted = Path(scratch) / "archive"
        safe_extract(path, extracted)
        train_root, test_root, val_root = _split_roots(_dataset_root(extracted))
        classes = _class_names(train_root, extracted)
        train_files = _labelled_files(train_root, classes, extracted)
        test_files = None if test_root is None else _labelled_files(test_root, classes, extracted)
        val_files = None if val_root is None else _labelled_files(val_root, classes, extracted)
        all_files = list(train_files.files)
        for split in (test_files, val_files):
            all_files += [] if split is None else split.files
        mode, size = _common_format(all_files, extracted, image_size=image_size)
        train_images = _decode_all(train_files.files, extracted, mode=mode, size=size)
        train_labels = torch.tensor(train_files.labels, dtype=torch.long)
        if test_files is None:
            train, test = split_every_fifth(train_images, train_labels)
        else:
            train = ImageDataset(train_images, train_labels)
            test = ImageDataset(
                _decode_all(test_files.files, extracted, mode=mode, size=size),
                torch.tensor(test_files.labels, dtype=torch.long),
            )
        val = None
        if val_files is not None:
            val = ImageDataset(
                _decode_all(val_files.files, extracted, mode=mode, size=size),
                torch.tensor(val_files.labels, dtype=torch.long),
            )
    return DatasetSplits(name=path.name, train=train, test=test, num_classes=len(classes), val=val)


def _is_hidden(path: Path) -> bool:
    # macOS's Finder adds `.DS_Store` files and a `__MACOSX` folder of resource forks to zips.
    return path.name.startswith(".") or path.name == "__MACOSX"


def _visible_children(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if not _is_hidden(child))


def _dataset_root(extracted: Path) -> Path:
    """The extraction folder, or the one folder wrapping the class folders."""
    children = _visible_children(extracted)
    if len(children) == 1 and children[0].is_dir():
        inner = _visible_children(children[0])
        if any(child.is_dir() for child in inner):
            return children[0]
    return extracted


def _split_roots(root: Path) -> tuple[Path, Path | None, Path | None]:
    """(train, test, validation) folders: `train/`+`test/`, `train/`+`val/` (val is the test
    split), `train/`+`val/`+`test/` (val is the validation split); else (root, None, None)."""
    folders = {child.name.lower(): child for child in _visible_children(root) if child.is_dir()}
    if "train" not in folders or not set(folders) & {"test", "val"}:
        return root, None, None
    if not set(folders) <= {"train", "test", "val"}:
        return root, None, None
    if "test" in folders and "val" in folders:
        return folders["train"], folders["test"], folders["val"]
    return folders["train"], folders.get("test", folders.get("val")), None


def _relative(path: Path, extracted: Path) -> str:
    return path.relative_to(extracted).as_posix()


def _class_names(train_root: Path, extracted: Path) -> list[str]:
    children = _visible_children(train_root)
    strays = [child for child in children if child.is_file() and _is_image(child)]
    if strays:
        raise DatasetError(
            f"image {_relative(strays[0], extracted)!r} is not inside a class folder: "
            "put every image in a folder named after its class"
        )
    classes = [child.name for child in children if child.is_dir()]
    if len(classes) < 2:
        raise DatasetError(
            f"found {len(classes)} class folder(s) in the archive ({classes}); "
            "an ImageFolder archive needs one folder per class and at least 2 classes"
        )
    if len(classes) > MAX_CLASSES:
        raise DatasetError(
            f"found {len(classes)} class folders: folder {classes[MAX_CLASSES]!r} would be "
            f"the label {MAX_CLASSES}; labels must be 0 <= label < {MAX_CLASSES}"
        )
    return classes


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _image_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        relative_parts = path.relative_to(folder).parts
        if any(part.startswith(".") or part == "__MACOSX" for part in relative_parts):
            continue
        if path.is_file() and _is_image(path):
            files.append(path)
    return files


def _labelled_files(split_root: Path, classes: list[str], extracted: Path) -> _Labelled:
    found = [child.name for child in _visible_children(split_root) if child.is_dir()]
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DatasetError(
            f"{_relative(split_root, extracted)} has class folder(s) {unknown} "
            f"that the training folder lacks (training classes: {classes})"
        )
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        folder = split_root / name
        if not folder.is_dir():
            continue
        class_files = _image_files(folder)
        if not class_files:
            raise DatasetError(
                f"class folder {_relative(folder, extracted)!r} has no images "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        files.extend(class_files)
        labels.extend([index] * len(class_files))
    if not files:
        raise DatasetError(f"{_relative(split_root, extracted)} has no images")
    return _Labelled(files=files, labels=labels)


def _open(path: Path, extracted: Path) -> Image.Image:
    """Open (lazily) one image, refusing undecodable files and decompression bombs."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"image {_relative(path, extracted)!r} is too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot read image {_relative(path, extracted)!r}: {_reason(exc, path, extracted)}"
        ) from exc
    width, height = image.size
    # Between MAX_IMAGE_PIXELS and twice that, PIL only warns; a service should refuse.
    if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
        image.close()
        raise DatasetError(
            f"image {_relative(path, extracted)!r} is {width}x{height} pixels, more than the "
            f"{Image.MAX_IMAGE_PIXELS} allowed"
        )
    return image


def _reason(exc: BaseException, path: Path, extracted: Path) -> str:
    # PIL names the file by its path in our scratch folder, which means nothing to the uploader.
    return str(exc).replace(str(path), _relative(path, extracted))


def _common_format(
    files: list[Path], extracted: Path, *, image_size: tuple[int, int] | None
) -> tuple[str, tuple[int, int]]:
    """The PIL mode ('L' or 'RGB') and (width, height) every image will be converted to."""
    all_grayscale = True
    first_size: tuple[int, int] | None = None
    first_file = files[0]
    for path in files:
        with _open(path, extracted) as image:
            all_grayscale = all_grayscale and image.mode in _GRAYSCALE_MODES
            size = (int(image.size[0]), int(image.size[1]))
        if first_size is None:
            first_size = size
        elif image_size is None and size != first_size:
            raise DatasetError(
                f"images differ in size: {_relative(first_file, extracted)!r} is "
                f"{first_size[0]}x{first_size[1]} but {_relative(path, extracted)!r} is "
                f"{size[0]}x{size[1]} (width x height); set image_size (height, width) "
                "to resize them all"
            )
    assert first_size is not None
    mode = "L" if all_grayscale else "RGB"
    if image_size is not None:
        height, width = image_size
        if height < 1 or width < 1:
            raise DatasetError(f"image_size must be two positive integers, got {image_size}")
        first_size = (int(width), int(height))
    channels = 1 if mode == "L" else 3
    decoded_bytes = len(files) * channels * first_size[0] * first_size[1]
    if decoded_bytes > MAX_DECODED_BYTES:
        raise DatasetError(
            f"{len(files)} images of {first_size[0]}x{first_size[1]} would take "
            f"{decoded_bytes} bytes in memory, more than {MAX_DECODED_BYTES}; "
            "set a smaller image_size or upload fewer images"
        )
    return mode, first_size


def _decode_all(
    files: list[Path], extracted: Path, *, mode: str, size: tuple[int, int]
) -> torch.Tensor:
    width, height = size
    channels = 1 if mode == "L" else 3
    images = np.empty((len(files), channels, height, width), dtype=np.uint8)
    for index, path in enumerate(files):
        pixels = _decode(path, extracted, mode=mode, size=size)
        images[index] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return torch.from_numpy(images)


def _decode(path: Path, extracted: Path, *, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image as uint8 HW (mode 'L') or HWC (mode 'RGB') pixels of `size` (width, height)."""
    with _open(path, extracted) as image:
        try:
            image.load()
            converted = _to_eight_bit(image).convert(mode)
            if converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise DatasetError(f"image {_relative(path, extracted)!r} is too large: {exc}") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(
                f"cannot decode image {_relative(path, extracted)!r}: "
                f"{_reason(exc, path, extracted)}"
            ) from exc


def _to_eight_bit(image: Image.Image) -> Image.Image:
    # PIL's convert("L") clips 16-bit grayscale at 255 instead of scaling, which would turn most
    # of a 16-bit PNG white.
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    pixels = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8))
