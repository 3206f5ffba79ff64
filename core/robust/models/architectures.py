"""Architectures by name, so a bare state_dict or safetensors file can be rebuilt into a model.

`torchvision:<name>` is any torchvision classification model and `timm:<name>` any timm model
(both built without weights: the user's file supplies them); the `builtin:` nets are small ones
for tests, demos and digit-sized inputs.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any

import torchvision
from torch import nn

from core.robust.errors import InvalidConfig, ModelLoadError

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"

Builder = Callable[[tuple[int, int, int], int], nn.Module]


def _check_min_size(name: str, input_shape: tuple[int, int, int], minimum: int) -> None:
    _, height, width = input_shape
    if height < minimum or width < minimum:
        raise ModelLoadError(
            f"{name} needs inputs of at least {minimum}x{minimum} pixels, got {height}x{width}"
        )


def _digits_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    _check_min_size("builtin:digits_cnn", input_shape, 2)
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (height // 2) * (width // 2), 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def _mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * height * width, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def _small_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    _check_min_size("builtin:small_cnn", input_shape, 4)
    channels = input_shape[0]
    # Adaptive pooling at the end lets one definition serve 8x8 digits and 32x32 CIFAR alike.
    return nn.Sequential(
        *_conv_block(channels, 32),
        *_conv_block(32, 32),
        nn.MaxPool2d(2),
        *_conv_block(32, 64),
        *_conv_block(64, 64),
        nn.MaxPool2d(2),
        *_conv_block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


_BUILTINS: dict[str, Builder] = {
    "builtin:digits_cnn": _digits_cnn,
    "builtin:mlp": _mlp,
    "builtin:small_cnn": _small_cnn,
}


def _torchvision_classifiers() -> list[str]:
    # Listing the top-level module only leaves out detection, segmentation and video models,
    # whose outputs are not class logits.
    return sorted(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _timm_models() -> tuple[str, ...]:
    # Imported here, not at the top: timm adds most of a second to an import, and only a timm:
    # name (or the full listing) needs it.
    import timm

    # Without `pretrained=True` the list holds base names (resnet18), not weight tags
    # (resnet18.a1_in1k): the weights come from the user's file, never from the hub.
    return tuple(timm.list_models())


def list_architectures() -> list[str]:
    """Every architecture name `build_architecture` accepts: built-ins, torchvision's, timm's."""
    return (
        sorted(_BUILTINS)
        + [TORCHVISION_PREFIX + name for name in _torchvision_classifiers()]
        + [TIMM_PREFIX + name for name in _timm_models()]
    )


def _unknown(name: str) -> ModelLoadError:
    close = difflib.get_close_matches(name, list_architectures(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ModelLoadError(
        f"unknown architecture {name!r}: use one of {', '.join(sorted(_BUILTINS))}, "
        f"torchvision:<name> for any torchvision classification model "
        f"(e.g. torchvision:resnet18), or timm:<name> for any timm model "
        f"(e.g. timm:resnet18).{hint}"
    )


def _check_input(input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise InvalidConfig(f"input_shape must be three positive integers [C, H, W], got {shape}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidConfig(f"num_classes must be a positive integer, got {num_classes!r}")
    return shape  # type: ignore[return-value]


def _build_torchvision(model_name: str, num_classes: int) -> nn.Module:
    if model_name not in _torchvision_classifiers():
        if model_name in torchvision.models.list_models():
            raise ModelLoadError(
                f"torchvision:{model_name} is not a classification model; only torchvision "
                "classification models (e.g. torchvision:resnet18) are accepted"
            )
        raise _unknown(TORCHVISION_PREFIX + model_name)
    try:
        # weights=None: never download anything; the user's file supplies the weights.
        return torchvision.models.get_model(model_name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"could not build torchvision:{model_name} with num_classes={num_classes}: {exc}"
        ) from exc


def _unknown_timm(model_name: str) -> ModelLoadError:
    base = model_name.split(".", 1)[0]
    if "." in model_name and base in _timm_models():
        return ModelLoadError(
            f"timm:{model_name} names a pretrained tag; use timm:{base}: the weights come from "
            "your file, never from the hub"
        )
    close = difflib.get_close_matches(model_name, _timm_models(), n=5)
    hint = f"; close: {', '.join(close)}" if close else ""
    return ModelLoadError(
        f"unknown timm model {model_name!r}{hint} (timm:<name> takes any name in "
        f"timm.list_models())"
    )


def _build_timm(model_name: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if model_name not in _timm_models():
        raise _unknown_timm(model_name)
    import timm

    channels, height, width = input_shape
    # Models with a fixed token grid (ViT, DeiT, Swin, CoAtNet, MaxViT, Mixer ...) size their
    # position embeddings and windows from `img_size`, 224 by default, and refuse a 32x32
    # input, or hold weights of another shape than the user's; so pass the upload's H x W to
    # every model that takes it. Convolutional ones (ResNet, ConvNeXt, EfficientNet) pool
    # adaptively and refuse the keyword, which is how they are told apart.
    img_size = height if height == width else (height, width)

    def create(**size: Any) -> nn.Module:
        # pretrained=False: never download; the user's file supplies the weights.
        return timm.create_model(
            model_name, pretrained=False, num_classes=num_classes, in_chans=channels, **size
        )

    try:
        try:
            return create(img_size=img_size)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            return create()
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        raise ModelLoadError(
            f"could not build timm:{model_name} for input_shape {list(input_shape)} and "
            f"num_classes={num_classes}: {exc}"
        ) from exc


def build_architecture(
    name: str, *, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """Build the named architecture with fresh weights for `input_shape` and `num_classes`.

    Raises ModelLoadError for an unknown name, InvalidConfig for a malformed shape.
    """
    shape = _check_input(input_shape, num_classes)
    if name.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(name.removeprefix(TORCHVISION_PREFIX), num_classes)
    if name.startswith(TIMM_PREFIX):
        return _build_timm(name.removeprefix(TIMM_PREFIX), shape, num_classes)
    builder = _BUILTINS.get(name)
    if builder is None:
        raise _unknown(name)
    return builder(shape, num_classes)
