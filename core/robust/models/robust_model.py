"""RobustModel: a net behind its fixed normalization, so inputs are pixels in [0,1]; a trainable
copy of any module; and the one forward pass that checks a model's declared input and output."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from core.robust.errors import ModelLoadError
from core.robust.models.spec import ModelSpec

__all__ = ["RobustModel", "check_forward", "copy_model", "device_of"]


class RobustModel(nn.Module):
    """`net` behind a fixed normalization, so inputs are always pixels in [0,1].

    Attacks and epsilons live in pixel space; `net` keeps the exact input the user's model
    expected, which is what `save_model` writes back.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        channels = spec.input_shape[0]
        mean = spec.mean if spec.mean is not None else (0.0,) * channels
        std = spec.std if spec.std is not None else (1.0,) * channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def __deepcopy__(self, memo: dict[int, Any]) -> RobustModel:
        # TorchScript's C++ deepcopy clones parameters *with* autograd history: the copies are
        # non-leaf tensors (optimizers refuse them) whose gradients flow into the original's.
        # Copying under no_grad gives clean leaves; their requires_grad flags are restored.
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        with torch.no_grad():
            state = copy.deepcopy(self.__dict__, memo)
        clone.__setstate__(state)
        wanted = {name: param.requires_grad for name, param in self.named_parameters()}
        for name, param in clone.named_parameters():
            param.requires_grad_(wanted[name])
        return clone


def copy_model(model: nn.Module) -> nn.Module:
    """A trainable deep copy of any module, TorchScript included (see RobustModel.__deepcopy__)."""
    with torch.no_grad():
        clone = copy.deepcopy(model)
    wanted = {name: param.requires_grad for name, param in model.named_parameters()}
    for name, param in clone.named_parameters():
        param.requires_grad_(wanted[name])
    return clone


def device_of(net: nn.Module) -> torch.device:
    for tensor in [*net.parameters(), *net.buffers()]:
        return tensor.device
    return torch.device("cpu")


def check_forward(model: RobustModel) -> None:
    spec = model.spec
    input_shape = [2, *spec.input_shape]
    expected = [2, spec.num_classes]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(*input_shape, device=device_of(model)))
    except Exception as exc:  # user code: anything can go wrong inside its forward
        raise ModelLoadError(f"forward pass on input {input_shape} failed: {exc}") from exc
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor):
        raise ModelLoadError(
            f"forward pass on input {input_shape} returned a {type(output).__name__}; "
            f"expected a tensor of shape {expected}"
        )
    if list(output.shape) != expected:
        raise ModelLoadError(
            f"forward pass on input {input_shape} gave output shape {list(output.shape)}; "
            f"expected {expected} (num_classes={spec.num_classes})"
        )
