"""The speed settings: how they resolve per device, PGD under autocast, the GradScaler's step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.robust.attacks import pgd
from core.robust.errors import InvalidConfig
from core.robust.measure import accuracy
from core.robust.precision import (
    autocast,
    backward_and_step,
    make_grad_scaler,
    prepare_inputs,
    prepare_model,
    release_model,
    resolve_speed,
)
from core.robust.threat import ThreatModel

CPU = torch.device("cpu")
THREAT = ThreatModel(norm="linf", epsilon=0.2, steps=7)


def test_auto_on_the_cpu_is_fp32_without_any_cuda_setting():
    speed = resolve_speed(CPU)
    assert speed.precision == "fp32" and speed.dtype is None
    assert not speed.channels_last and not speed.cudnn_benchmark and not speed.compile
    assert make_grad_scaler(speed) is None


@pytest.mark.parametrize(
    ("image_size", "mixed"),
    [((32, 32), False), ((128, 128), False), ((128, 224), False), ((224, 224), True), (None, True)],
)
def test_auto_on_a_gpu_is_fp32_for_small_images_and_mixed_for_large_ones(image_size, mixed):
    # Resolving touches no GPU: this runs on a machine without one (where bf16 reads as
    # unsupported, so mixed means fp16 there).
    speed = resolve_speed(torch.device("cuda"), image_size=image_size)
    assert (speed.precision in ("bf16", "fp16")) == mixed, speed.precision
    assert speed.channels_last and speed.cudnn_benchmark
    explicit = resolve_speed(torch.device("cuda"), precision="bf16", image_size=image_size)
    assert explicit.precision == "bf16"  # a named precision is never overridden


def test_explicit_settings_on_the_cpu_are_honoured_where_the_cpu_has_them():
    speed = resolve_speed(CPU, precision="bf16", channels_last=True, cudnn_benchmark=True)
    assert speed.dtype == torch.bfloat16 and speed.channels_last
    assert not speed.cudnn_benchmark  # cuDNN is CUDA's
    assert make_grad_scaler(resolve_speed(CPU, precision="fp16")) is not None


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"precision": "fp8"}, "precision"), ({"channels_last": True, "input_ndim": 2}, "4-D")],
)
def test_bad_speed_settings_are_refused_with_their_name(settings, named):
    with pytest.raises(InvalidConfig, match=named):
        resolve_speed(CPU, **settings)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_pgd_under_autocast_stays_fp32_in_the_ball_and_as_strong(tiny_cnn, digits, precision):
    x, labels = digits.test.tensors(200)
    generator = torch.Generator().manual_seed(0)
    reference = pgd(tiny_cnn, x, labels, THREAT, generator=generator)
    with autocast(resolve_speed(CPU, precision=precision)):
        x_adv = pgd(tiny_cnn, x, labels, THREAT, generator=torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= THREAT.epsilon + 1e-6
    assert 0.0 <= x_adv.min() and x_adv.max() <= 1.0
    robust = float((tiny_cnn(x_adv).argmax(1) == labels).float().mean())
    reference_robust = float((tiny_cnn(reference).argmax(1) == labels).float().mean())
    assert robust <= reference_robust + 0.03
    assert robust < accuracy(tiny_cnn, digits.test, device="cpu") - 0.5


def test_fp16_pgd_step_moves_every_pixel_fp32_moves_where_its_raw_gradient_underflows(
    tiny_cnn, digits
):
    x, labels = digits.test.tensors(200)
    x_in = x.clone().requires_grad_(True)
    with autocast(resolve_speed(CPU, precision="fp16")):
        loss = F.cross_entropy(tiny_cnn(x_in).float(), labels, reduction="sum")
    (raw_fp16_gradient,) = torch.autograd.grad(loss, x_in)
    # One step from x, no random start: a pixel moves where its gradient's sign is not zero.
    one_step = ThreatModel(norm="linf", epsilon=0.05, steps=1, step_size=0.05, random_start=False)
    fp32_step = pgd(tiny_cnn, x, labels, one_step)
    with autocast(resolve_speed(CPU, precision="fp16")):
        fp16_step = pgd(tiny_cnn, x, labels, one_step)
    assert (raw_fp16_gradient == 0).float().mean() > 0.005  # what the attack's scale fixes
    assert ((fp16_step - fp32_step).abs() > 0).float().mean() < 0.003
    moved_fp16, moved_fp32 = (((step - x) != 0).float().mean() for step in (fp16_step, fp32_step))
    assert abs(moved_fp16 - moved_fp32) < 0.001


def test_grad_scaler_step_skips_overflowing_gradients_and_takes_finite_ones():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler = make_grad_scaler(resolve_speed(CPU, precision="fp16"))
    assert scaler is not None
    start_scale = scaler.get_scale()
    # 1e35 x 2**16 overflows fp32: the scaler must skip the step and halve its scale.
    taken = backward_and_step((weight * 1e35).sum(), optimizer, scaler)
    assert not taken and torch.equal(weight.detach(), torch.ones(3))
    assert scaler.get_scale() == start_scale / 2
    optimizer.zero_grad()
    assert backward_and_step((weight * 2.0).sum(), optimizer, scaler)
    assert torch.allclose(weight.detach(), torch.full((3,), 0.8))  # the unscaled gradient, 2


def test_channels_last_model_and_inputs_compute_the_same_and_release_contiguous(tiny_cnn, digits):
    x, _ = digits.test.tensors(64)
    expected = tiny_cnn(x)
    speed = resolve_speed(CPU, channels_last=True)
    forward = prepare_model(tiny_cnn, speed)
    assert forward is tiny_cnn
    convolution = next(p for p in tiny_cnn.parameters() if p.ndim == 4)
    assert convolution.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(forward(prepare_inputs(x, speed)), expected, atol=1e-5)
    release_model(tiny_cnn)
    assert all(p.is_contiguous() for p in tiny_cnn.parameters())


def test_compiled_training_model_shares_the_weights_and_keeps_the_modules_keys(tiny_cnn):
    keys = list(tiny_cnn.state_dict())
    forward = prepare_model(tiny_cnn, resolve_speed(CPU, compile=True))
    assert forward is not tiny_cnn
    assert list(tiny_cnn.state_dict()) == keys
    assert {id(p) for p in forward.parameters()} == {id(p) for p in tiny_cnn.parameters()}
