"""How a fine-tuning run uses its device fast: mixed precision (autocast, and a GradScaler for
fp16), channels_last, cudnn.benchmark and torch.compile, resolved once per run (TrainingSpeed).

Only the training step (its attack and its update) runs this way. Validation, evaluate() and the
probe's scoring stay fp32: low-precision input gradients are coarser, and an attack that climbs
them worse makes a model look more robust than it is (gradient masking).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.robust.errors import InvalidConfig

# The names are FinetuneConfig's (finetune_config.PRECISIONS: "auto" resolves to one of these).
PRECISION_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


# "auto" stays fp32 on a GPU for images this small (pixels on the shorter side). Measured on an
# H200 (README, benchmarks/precision_by_size.py and throughput.py): resnet18's PGD-10 step at
# batch 128 was bound by launching its kernels up to 128 px, where autocast's casts only add
# launches (bf16 0.88-1.05x fp32, with channels_last 0.99-1.01x; 0.89-0.91x at 32 px over 60
# batches); at 224 px bf16 with channels_last ran 1.26x fp32.
AUTO_FP32_MAX_SIDE = 128


@dataclass(frozen=True)
class TrainingSpeed:
    """The resolved speed settings of one run on one device."""

    device_type: str
    dtype: torch.dtype | None  # the autocast dtype; None: fp32, no autocast
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool

    @property
    def precision(self) -> str:
        """The precision's name, fp32, bf16 or fp16: what the manifest records."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def uses_grad_scaler(self) -> bool:
        # bf16 has fp32's exponent range; fp16's small gradients underflow without scaling.
        return self.dtype == torch.float16


def resolve_speed(
    device: torch.device,
    *,
    precision: str = "auto",
    channels_last: bool | None = None,
    cudnn_benchmark: bool | None = None,
    compile: bool = False,
    input_ndim: int = 4,
    image_size: tuple[int, int] | None = None,
) -> TrainingSpeed:
    """The settings for `device` and images of `image_size` (height, width; None: unknown,
    taken as large): "auto" precision is, on a CUDA device, fp32 for images of at most
    AUTO_FP32_MAX_SIDE pixels on a side, else bf16 where the device supports it and fp16
    where not; fp32 anywhere else. channels_last (None) is on for CUDA and 4-D inputs,
    cudnn_benchmark (None) on with CUDA. Given explicitly, bf16 and fp16 run on the CPU too
    (CPU autocast); channels_last too."""
    cuda = device.type == "cuda"
    if precision == "auto":
        small = image_size is not None and min(image_size) <= AUTO_FP32_MAX_SIDE
        if cuda and not small:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision not in PRECISION_DTYPES:
        raise InvalidConfig(
            f"precision must be one of auto, {', '.join(PRECISION_DTYPES)}, got {precision!r}"
        )
    if channels_last is None:
        channels_last = cuda and input_ndim == 4
    elif channels_last and input_ndim != 4:
        raise InvalidConfig(f"channels_last needs 4-D (NCHW) inputs, these have {input_ndim}")
    return TrainingSpeed(
        device_type=device.type,
        dtype=PRECISION_DTYPES[precision],
        channels_last=channels_last,
        cudnn_benchmark=cuda if cudnn_benchmark is None else cudnn_benchmark and cuda,
        compile=compile,
    )


FP32 = TrainingSpeed(
    device_type="cpu", dtype=None, channels_last=False, cudnn_benchmark=False, compile=False
)


def autocast(speed: TrainingSpeed) -> Any:
    """The context a training step's forward passes (the attack's and the loss's) run in; the
    backward pass runs outside it, as torch.amp asks."""
    if speed.dtype is None:
        return nullcontext()
    return torch.autocast(device_type=speed.device_type, dtype=speed.dtype)


def make_grad_scaler(speed: TrainingSpeed) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler(speed.device_type) if speed.uses_grad_scaler else None


def prepare_model(model: nn.Module, speed: TrainingSpeed) -> nn.Module:
    """Put `model` in the run's memory format (in place) and return what the training step
    calls: the model itself, or its torch.compile'd wrapper. The wrapper shares the weights;
    checkpoints and the result keep using `model`, whose state_dict keys carry no `_orig_mod.`."""
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    if not speed.compile:
        return model
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]  # an OptimizedModule
    return compiled


def release_model(model: nn.Module) -> None:
    """Back to the default memory format: the result must save as safetensors (contiguous)."""
    model.to(memory_format=torch.contiguous_format)


def prepare_inputs(x: torch.Tensor, speed: TrainingSpeed) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if speed.channels_last else x


@contextmanager
def cudnn_benchmark(speed: TrainingSpeed) -> Iterator[None]:
    """torch.backends.cudnn.benchmark as the run wants it, restored afterwards (a global)."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = speed.cudnn_benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def backward_and_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> bool:
    """loss.backward() and optimizer.step(); under fp16 through the GradScaler (scale the loss,
    unscale, step, update). Whether the step was taken: False when the scaler found inf or NaN
    in the scaled gradients, skipped it and lowered its scale. That is the scaler finding its
    level (its first steps at 2**16 often overflow), not the run diverging: the loss guard
    watches the unscaled loss, which stays finite."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale
