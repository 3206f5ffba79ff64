"""WebDataset shards (https://github.com/webdataset/webdataset) as an upload: a tar of samples,
each a group of files sharing one key (`000123.png` with `000123.cls`, the class index as text),
read here from the extracted tar: the files are streamed or decoded like an ImageFolder's.
"""

from __future__ import annotations

from pathlib import Path

from webdataset.tariterators import base_plus_ext

from core.robust.datasets.image_files import IMAGE_SUFFIXES, relative_name
from core.robust.errors import DatasetError

__all__ = ["LABEL_EXTENSION", "is_webdataset", "webdataset_samples"]

LABEL_EXTENSION = "cls"
_IMAGE_EXTENSIONS = {suffix.removeprefix(".") for suffix in IMAGE_SUFFIXES}


def _visible_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and not any(part.startswith(".") or part == "__MACOSX" for part in parts):
            files.append(path)
    return files


def is_webdataset(folder: Path) -> bool:
    """Whether the extracted upload holds WebDataset samples (files named `<key>.cls`)."""
    return any(path.suffix == f".{LABEL_EXTENSION}" for path in _visible_files(folder))


def webdataset_samples(split_root: Path, extracted: Path) -> tuple[list[Path], list[int]]:
    """The samples' image files, ordered by key, and their labels from the `.cls` files.

    Every key needs exactly one image (png, jpg, ...) and one `.cls`; other files of a sample
    (`.json`, `.txt`) are ignored, as WebDataset's own readers do with fields they do not use."""
    images: dict[str, list[Path]] = {}
    labels: dict[str, Path] = {}
    for path in _visible_files(split_root):
        key, extension = base_plus_ext(path.relative_to(split_root).as_posix())
        if key is None:
            continue
        extension = extension.lower()
        if extension == LABEL_EXTENSION:
            labels[key] = path
        elif extension.rsplit(".", 1)[-1] in _IMAGE_EXTENSIONS:
            images.setdefault(key, []).append(path)
    files, values = [], []
    for key in sorted(set(images) | set(labels)):
        name = relative_name(split_root / key, extracted)
        found = images.get(key, [])
        if len(found) != 1:
            raise DatasetError(
                f"WebDataset sample {name!r} has {len(found)} images; each sample needs one "
                f"image ({', '.join(sorted(_IMAGE_EXTENSIONS))}) beside its .cls label"
            )
        if key not in labels:
            raise DatasetError(f"WebDataset sample {name!r} has no .cls file with its label")
        files.append(found[0])
        values.append(_label(labels[key], extracted))
    if not files:
        raise DatasetError(f"{relative_name(split_root, extracted)} has no WebDataset samples")
    return files, values


def _label(path: Path, extracted: Path) -> int:
    with path.open("rb") as handle:
        text = handle.read(32).decode("ascii", errors="replace").strip()
    try:
        return int(text)
    except ValueError:
        raise DatasetError(
            f"{relative_name(path, extracted)!r} should hold a class index (an integer), "
            f"found {text!r}"
        ) from None
