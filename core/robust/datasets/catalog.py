"""The builtin datasets the engine can load by name (`builtin:digits`, ...), and the cap on a
dataset's classes. Torch-free: the API lists these without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUILTIN_DATASETS", "MAX_CLASSES", "BuiltinDataset"]

# Labels are class indices 0 <= label < MAX_CLASSES, the same cap as a model's num_classes: a
# label of 10**12 would otherwise declare a trillion classes.
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str


BUILTIN_DATASETS = {
    spec.name: spec
    for spec in (
        BuiltinDataset(
            "builtin:digits",
            (1, 8, 8),
            10,
            "scikit-learn's 8x8 digits, bundled: 1,437 train / 360 test",
        ),
        BuiltinDataset(
            "builtin:digits32",
            (3, 32, 32),
            10,
            "the bundled digits upscaled to 3x32x32 and tinted, one colour per image: "
            "1,437 train / 360 test",
        ),
        BuiltinDataset("builtin:mnist", (1, 28, 28), 10, "MNIST, read from the data folder"),
        BuiltinDataset(
            "builtin:fashion_mnist", (1, 28, 28), 10, "Fashion-MNIST, read from the data folder"
        ),
        BuiltinDataset("builtin:cifar10", (3, 32, 32), 10, "CIFAR-10, read from the data folder"),
        BuiltinDataset(
            "builtin:cifar100", (3, 32, 32), 100, "CIFAR-100, read from the data folder"
        ),
        BuiltinDataset("builtin:svhn", (3, 32, 32), 10, "SVHN, read from the data folder"),
    )
}
