"""What a model is (ModelSpec): its file format, the architecture that rebuilds it, its input
shape, classes and normalization; checked when declared. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from core.robust.errors import InvalidConfig
from core.robust.models.formats import FORMATS, ModelFormat

__all__ = ["ModelSpec", "make_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: its file format, how to rebuild it, and the input it expects."""

    format: ModelFormat
    architecture: str | None
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidConfig(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        shape = self.input_shape
        if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise InvalidConfig(
                f"input_shape must be three positive integers [C, H, W], got {list(shape)}"
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise InvalidConfig(f"num_classes must be a positive integer, got {self.num_classes}")
        channels = shape[0]
        for field, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != channels:
                raise InvalidConfig(
                    f"{field} has {len(values)} values but input_shape has {channels} channels"
                )
        if self.std is not None and not all(s > 0 for s in self.std):
            raise InvalidConfig(f"std values must all be > 0, got {list(self.std)}")


def make_spec(
    format: str,
    *,
    architecture: str | None,
    input_shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...] | list[float] | None,
    std: tuple[float, ...] | list[float] | None,
) -> ModelSpec:
    return ModelSpec(
        format=cast(ModelFormat, format),
        architecture=architecture,
        input_shape=cast(tuple[int, int, int], tuple(input_shape)),
        num_classes=num_classes,
        mean=None if mean is None else tuple(float(v) for v in mean),
        std=None if std is None else tuple(float(v) for v in std),
    )
