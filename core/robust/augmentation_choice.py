"""The names of the training-time augmentations and the default a dataset gets ("auto").

Torch-free, so the service can resolve a job's "auto" without importing the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

# none: the batches as they are; standard: a random crop of the image zero-padded by 4 pixels
# and a left-right flip (small natural images, CIFAR's); imagenet: a random resized crop and a
# left-right flip (larger images).
Augmentation = Literal["none", "standard", "imagenet"]
AUGMENTATIONS: tuple[Augmentation, ...] = get_args(Augmentation)

# Datasets of digits: a mirrored 2 or 5 is no digit, so they never flip, and (having no
# flip-free augmentation to offer) they get none. SVHN's house numbers are digits too.
DIGIT_DATASETS = frozenset({"builtin:digits", "builtin:digits32", "builtin:mnist", "builtin:svhn"})
# Below this side a 4-pixel crop moves a large share of the image; above the larger one the
# image is big enough for resized crops.
SMALLEST_AUGMENTED_SIDE = 16
LARGEST_STANDARD_SIDE = 64


def default_augmentation(*, dataset: str, input_shape: Sequence[int]) -> Augmentation:
    """The augmentation "auto" means for `dataset` (builtin:<name> or an uploaded id) whose
    images are `input_shape` (C, H, W): none for digits and tiny images, standard up to 64
    pixels a side, imagenet above."""
    if dataset in DIGIT_DATASETS:
        return "none"
    side = min(input_shape[-2:])
    if side < SMALLEST_AUGMENTED_SIDE:
        return "none"
    if side <= LARGEST_STANDARD_SIDE:
        return "standard"
    return "imagenet"
