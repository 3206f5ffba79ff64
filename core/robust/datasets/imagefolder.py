"""Read an uploaded ImageFolder archive (one folder per class), or a WebDataset tar of samples
(core.robust.datasets.webdataset_layout), into dataset splits: held in memory as uint8 NCHW when
small, streamed from the extracted files when large."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from core.robust.datasets.archives import safe_extract
from core.robust.datasets.catalog import MAX_CLASSES
from core.robust.datasets.image_files import (
    IMAGE_SUFFIXES,
    ImageFormat,
    common_format,
    decode_all,
    relative_name,
)
from core.robust.datasets.splits import DatasetSplits, ImageDataset, TrainingImages
from core.robust.datasets.streamed import DEFAULT_IN_MEMORY_BYTES, StreamedImageDataset
from core.robust.datasets.webdataset_layout import is_webdataset, webdataset_samples
from core.robust.errors import DatasetError

__all__ = [
    "DEFAULT_STREAM_THRESHOLD_BYTES",
    "IMAGE_SUFFIXES",
    "load_image_folder",
    "load_image_folder_archive",
]

logger = logging.getLogger(__name__)

# Decoded pixels held in memory; this bounds what a small archive of tiny, highly compressed
# but huge images can make us allocate. A streamed split holds none.
MAX_DECODED_BYTES = 4 * 1024**3
# A split whose decoded pixels would pass this is streamed from disk instead of held in memory
# (and a streamed split's subset up to this size is held in memory).
DEFAULT_STREAM_THRESHOLD_BYTES = DEFAULT_IN_MEMORY_BYTES


@dataclass(frozen=True)
class _Labelled:
    """Image files of one split, in a fixed order, with their class indices."""

    files: list[Path]
    labels: list[int]

    def every_fifth(self, *, test: bool) -> _Labelled:
        """The project's fixed split (index % 5 == 0 is test), as splits.split_every_fifth."""
        chosen = [index for index in range(len(self.files)) if (index % 5 == 0) == test]
        return _Labelled([self.files[i] for i in chosen], [self.labels[i] for i in chosen])


def load_image_folder_archive(
    path: Path,
    *,
    image_size: tuple[int, int] | None = None,
    stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
    stream_workers: int = 0,
) -> DatasetSplits[TrainingImages]:
    """Load a `.zip`/`.tar.gz` of class folders (optionally under `train/` and `test/` or `val/`).

    The archive is extracted to a scratch folder (safe_extract's limits), which lives as long as
    a streamed split needs it. See `load_image_folder` for the layout and the streaming.
    """
    path = Path(path)
    scratch = tempfile.TemporaryDirectory(prefix="robustify-imagefolder-")
    try:
        extracted = Path(scratch.name) / "archive"
        safe_extract(path, extracted)
        data = load_image_folder(
            extracted,
            name=path.name,
            image_size=image_size,
            stream_threshold_bytes=stream_threshold_bytes,
            stream_workers=stream_workers,
            scratch=scratch,
        )
    except BaseException:
        scratch.cleanup()
        raise
    splits = [data.train, data.test, data.val]
    if not any(isinstance(split, StreamedImageDataset) for split in splits):
        scratch.cleanup()
    return data


def load_image_folder(
    extracted: Path,
    *,
    name: str,
    image_size: tuple[int, int] | None = None,
    stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
    stream_workers: int = 0,
    scratch: object = None,
) -> DatasetSplits[TrainingImages]:
    """Read an extracted ImageFolder tree (a folder per class) into splits.

    Classes are numbered by sorted folder name. Images become RGB unless all are grayscale (then
    one channel), resized to `image_size` (H, W) when given, else all must share one size.
    Without a test folder, every fifth image is the test split. With `train/`, `val/` and
    `test/`, `val/` is the validation split (the best epoch is chosen on it); with only `train/`
    and `val/`, `val/` is the test split (as torchvision's ImageNet names it) and the job holds
    a validation split out of train.

    A split whose decoded pixels would pass `stream_threshold_bytes` is a StreamedImageDataset
    over the files (decoded by `stream_workers` processes); its every file's header is checked
    now, so a broken file fails the load, not an epoch. `scratch` owns the folder, if anything.
    """
    train_files, test_files, val_files, num_classes = _layout(extracted)
    all_files = list(train_files.files)
    for split in (test_files, val_files):
        all_files += [] if split is None else split.files
    image_format = common_format(all_files, extracted, image_size=image_size)
    if test_files is None:
        train_files, test_files = (
            train_files.every_fifth(test=False),
            train_files.every_fifth(test=True),
        )
    splits = {"train": train_files, "test": test_files, "val": val_files}
    present = {split: files for split, files in splits.items() if files is not None}
    streams = {
        split: len(files.files) * image_format.image_bytes > stream_threshold_bytes
        for split, files in present.items()
    }
    held = [files for split, files in present.items() if not streams[split]]
    _check_decoded_size(sum(len(files.files) for files in held), image_format)
    streamed_files = [
        path for split, files in present.items() if streams[split] for path in files.files
    ]
    if streamed_files:
        # What streams is decoded later: every file's structure is checked now instead.
        common_format(streamed_files, extracted, image_size=image_size, verify=True)

    def build(split: str) -> TrainingImages:
        files = present[split]
        labels = torch.tensor(files.labels, dtype=torch.long)
        if not streams[split]:
            return ImageDataset(decode_all(files.files, extracted, image_format), labels)
        return StreamedImageDataset(
            files.files,
            labels,
            root=extracted,
            image_format=image_format,
            workers=stream_workers,
            in_memory_bytes=stream_threshold_bytes,
            scratch=scratch,
        )

    train, test = build("train"), build("test")
    val = build("val") if "val" in present else None
    return DatasetSplits(name=name, train=train, test=test, num_classes=num_classes, val=val)


def _layout(extracted: Path) -> tuple[_Labelled, _Labelled | None, _Labelled | None, int]:
    """The (train, test, validation) files with their labels, and the number of classes: from
    class folders, or from WebDataset samples' `.cls` files (classes: the largest label + 1)."""
    root = _dataset_root(extracted)
    train_root, test_root, val_root = _split_roots(root)
    roots = (train_root, test_root, val_root)
    if is_webdataset(root):
        train, test, val = (
            None if split is None else _Labelled(*webdataset_samples(split, extracted))
            for split in roots
        )
        assert train is not None
        present = [split for split in (train, test, val) if split is not None]
        return train, test, val, 1 + max(max(split.labels) for split in present)
    classes = _class_names(train_root, extracted)
    train, test, val = (
        None if split is None else _labelled_files(split, classes, extracted) for split in roots
    )
    assert train is not None
    return train, test, val, len(classes)


def _check_decoded_size(count: int, image_format: ImageFormat) -> None:
    decoded_bytes = count * image_format.image_bytes
    if decoded_bytes > MAX_DECODED_BYTES:
        raise DatasetError(
            f"{count} images of {image_format.width}x{image_format.height} would take "
            f"{decoded_bytes} bytes in memory, more than {MAX_DECODED_BYTES}; "
            "set a smaller image_size or upload fewer images"
        )


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


def _class_names(train_root: Path, extracted: Path) -> list[str]:
    children = _visible_children(train_root)
    strays = [child for child in children if child.is_file() and _is_image(child)]
    if strays:
        raise DatasetError(
            f"image {relative_name(strays[0], extracted)!r} is not inside a class folder: "
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
            f"{relative_name(split_root, extracted)} has class folder(s) {unknown} "
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
                f"class folder {relative_name(folder, extracted)!r} has no images "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        files.extend(class_files)
        labels.extend([index] * len(class_files))
    if not files:
        raise DatasetError(f"{relative_name(split_root, extracted)} has no images")
    return _Labelled(files=files, labels=labels)
