"""One image file on disk: open it safely, read its header, decode it to uint8 CHW pixels.

Shared by the in-memory ImageFolder loader and the streamed dataset, so both see the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.robust.errors import DatasetError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFormat",
    "check_image_header",
    "common_format",
    "decode_all",
    "decode_image",
    "relative_name",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


@dataclass(frozen=True)
class ImageFormat:
    """What every image of a dataset is converted to: PIL mode ('L' or 'RGB') and size."""

    mode: str
    width: int
    height: int

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def image_bytes(self) -> int:
        """Bytes of one decoded uint8 image."""
        return self.channels * self.height * self.width

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def relative_name(path: Path, root: Path) -> str:
    """The file's name inside the upload, which is what the uploader recognizes."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _open(path: Path, root: Path) -> Image.Image:
    """Open (lazily) one image, refusing undecodable files and decompression bombs."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DatasetError(f"image {relative_name(path, root)!r} is too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(
            f"cannot read image {relative_name(path, root)!r}: {_reason(exc, path, root)}"
        ) from exc
    width, height = image.size
    # Between MAX_IMAGE_PIXELS and twice that, PIL only warns; a service should refuse.
    if Image.MAX_IMAGE_PIXELS is not None and width * height > Image.MAX_IMAGE_PIXELS:
        image.close()
        raise DatasetError(
            f"image {relative_name(path, root)!r} is {width}x{height} pixels, more than the "
            f"{Image.MAX_IMAGE_PIXELS} allowed"
        )
    return image


def _reason(exc: BaseException, path: Path, root: Path) -> str:
    # PIL names the file by its path in our scratch folder, which means nothing to the uploader.
    return str(exc).replace(str(path), relative_name(path, root))


def check_image_header(path: Path, root: Path, *, verify: bool) -> tuple[bool, tuple[int, int]]:
    """(is grayscale, (width, height)) from the file's header, without decoding its pixels.

    With `verify`, PIL also checks the file's structure (a PNG's chunk checksums): a file that
    is streamed later must not turn out broken in the middle of an epoch."""
    with _open(path, root) as image:
        grayscale = image.mode in _GRAYSCALE_MODES
        size = (int(image.size[0]), int(image.size[1]))
        if verify:
            try:
                image.verify()
            except Exception as exc:  # PIL raises many types here (SyntaxError, struct.error)
                raise DatasetError(
                    f"image {relative_name(path, root)!r} is damaged: {_reason(exc, path, root)}"
                ) from exc
    return grayscale, size


def common_format(
    files: Sequence[Path], root: Path, *, image_size: tuple[int, int] | None, verify: bool = False
) -> ImageFormat:
    """The format every image will be converted to: 'L' if all are grayscale, else 'RGB', at
    `image_size` (H, W) when given, else the one size they must all share."""
    all_grayscale = True
    first_size: tuple[int, int] | None = None
    first_file = files[0]
    for path in files:
        grayscale, size = check_image_header(path, root, verify=verify)
        all_grayscale = all_grayscale and grayscale
        if first_size is None:
            first_size = size
        elif image_size is None and size != first_size:
            raise DatasetError(
                f"images differ in size: {relative_name(first_file, root)!r} is "
                f"{first_size[0]}x{first_size[1]} but {relative_name(path, root)!r} is "
                f"{size[0]}x{size[1]} (width x height); set image_size (height, width) "
                "to resize them all"
            )
    assert first_size is not None
    mode = "L" if all_grayscale else "RGB"
    if image_size is None:
        return ImageFormat(mode=mode, width=first_size[0], height=first_size[1])
    height, width = image_size
    if height < 1 or width < 1:
        raise DatasetError(f"image_size must be two positive integers, got {image_size}")
    return ImageFormat(mode=mode, width=int(width), height=int(height))


def decode_image(path: Path, root: Path, image_format: ImageFormat) -> np.ndarray:
    """One image as uint8 CHW pixels in `image_format`."""
    size = (image_format.width, image_format.height)
    with _open(path, root) as image:
        try:
            image.load()
            converted = _to_eight_bit(image).convert(image_format.mode)
            if converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
            pixels = np.array(converted, dtype=np.uint8)  # writable: torch takes it as is
        except Image.DecompressionBombError as exc:
            raise DatasetError(f"image {relative_name(path, root)!r} is too large: {exc}") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise DatasetError(
                f"cannot decode image {relative_name(path, root)!r}: {_reason(exc, path, root)}"
            ) from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def decode_all(files: Sequence[Path], root: Path, image_format: ImageFormat) -> torch.Tensor:
    """All `files` decoded into one uint8 NCHW tensor."""
    images = np.empty((len(files), *image_format.input_shape), dtype=np.uint8)
    for index, path in enumerate(files):
        images[index] = decode_image(path, root, image_format)
    return torch.from_numpy(images)


def _to_eight_bit(image: Image.Image) -> Image.Image:
    # PIL's convert("L") clips 16-bit grayscale at 255 instead of scaling, which would turn most
    # of a 16-bit PNG white.
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    pixels = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8))
