"""Fine-tuning with the speed settings on the CPU: "auto" is today's fp32 bit for bit, bf16 and
fp16 (with its GradScaler, saved and restored) train close to it, channels_last and compile hand
back an ordinary model."""

from __future__ import annotations

import pytest
import torch

from core.robust.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from core.robust.finetune import FinetuneConfig, FinetuneResult, adversarial_finetune
from core.robust.finetune_run import FinetuneRun, cpu_copy
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=0.2, steps=5)


def _config(**settings: object) -> FinetuneConfig:
    base: dict[str, object] = {"epochs": 2, "batch_size": 64, "peak_lr": 0.1, "seed": 1}
    return FinetuneConfig(**{**base, **settings})  # type: ignore[arg-type]


def _run(pretrained_cnn, digits, config, **kwargs):
    train = digits.train.subset(torch.arange(256))
    return adversarial_finetune(pretrained_cnn, train, THREAT, config, device="cpu", **kwargs)


def _weights(result: FinetuneResult) -> dict[str, torch.Tensor]:
    return result.model.state_dict()


def test_auto_precision_on_the_cpu_trains_bit_identical_to_fp32(pretrained_cnn, digits):
    auto = _run(pretrained_cnn, digits, _config())
    fp32 = _run(pretrained_cnn, digits, _config(precision="fp32", channels_last=False))
    for name, value in _weights(fp32).items():
        assert torch.equal(value, _weights(auto)[name]), name
    assert [m.train_loss for m in auto.history] == [m.train_loss for m in fp32.history]
    assert auto.precision == fp32.precision == "fp32"  # what the job's metrics report


def _losses(pretrained_cnn, digits, config) -> tuple[list[float], FinetuneResult]:
    losses: list[float] = []
    result = _run(pretrained_cnn, digits, config, on_batch=lambda *batch: losses.append(batch[3]))
    return losses, result


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_step_on_the_cpu_measures_the_fp32_loss(pretrained_cnn, digits, precision):
    fp32_losses, fp32 = _losses(pretrained_cnn, digits, _config(precision="fp32"))
    losses, low = _losses(pretrained_cnn, digits, _config(precision=precision))
    # The first batch: the same weights, attacked and scored in low precision.
    assert losses[0] == pytest.approx(fp32_losses[0], rel=0.02)
    assert losses[0] != fp32_losses[0]  # it did run in low precision
    for name, value in low.model.state_dict().items():
        assert value.dtype == fp32.model.state_dict()[name].dtype  # the weights stay fp32
    assert low.precision == precision


def test_bf16_run_on_the_cpu_trains_as_fp32_does(pretrained_cnn, digits):
    fp32 = _run(pretrained_cnn, digits, _config(precision="fp32"))
    bf16 = _run(pretrained_cnn, digits, _config(precision="bf16"))
    for reference, measured in zip(fp32.history, bf16.history, strict=True):
        assert measured.train_loss == pytest.approx(reference.train_loss, rel=0.05)


def test_fp16_grad_scaler_skips_only_its_first_overflowing_steps(pretrained_cnn, digits):
    # fp16's run is not compared epoch by epoch: at 2**16 the scaler skips a step or two while
    # it finds its scale (one of these 8 steps), which a run of 8 steps feels.
    checkpoints: list[Checkpoint] = []
    _run(
        pretrained_cnn,
        digits,
        _config(precision="fp16"),
        on_epoch=lambda m, c: checkpoints.append(c),
    )
    assert 2.0**14 <= checkpoints[-1]["grad_scaler"]["scale"] <= 2.0**16


def test_fp16_run_saves_its_grad_scaler_and_resumes_bit_identical(pretrained_cnn, digits, tmp_path):
    config = _config(precision="fp16")
    full = _run(pretrained_cnn, digits, config)

    def save(metrics, checkpoint: Checkpoint) -> None:
        save_checkpoint(checkpoint, tmp_path / f"epoch-{metrics.epoch}.pt")

    _run(pretrained_cnn, digits, config, on_epoch=save)
    first = load_checkpoint(tmp_path / "epoch-1.pt")
    assert first["grad_scaler"]["scale"] > 0
    resumed = _run(pretrained_cnn, digits, config, resume=first)
    for name, value in _weights(full).items():
        assert torch.equal(value, _weights(resumed)[name]), name


def test_resume_restores_the_grad_scalers_scale(pretrained_cnn, digits):
    train = digits.train.subset(torch.arange(64))
    config = _config(precision="fp16")

    def fresh_run() -> FinetuneRun:
        return FinetuneRun(
            pretrained_cnn, train, THREAT, config, torch.device("cpu"),
            peak_lr=0.1, optimizer="sgd", start_state=cpu_copy(pretrained_cnn),
        )  # fmt: skip

    checkpoint = fresh_run().checkpoint()
    assert checkpoint["grad_scaler"]["scale"] == 2.0**16  # torch's starting scale
    checkpoint["grad_scaler"]["scale"] = 512.0  # as a run whose scaler backed off would save
    restored = fresh_run()
    restored.restore(checkpoint)
    assert restored.grad_scaler is not None and restored.grad_scaler.get_scale() == 512.0


def test_fp32_checkpoint_carries_no_grad_scaler(pretrained_cnn, digits):
    checkpoints: list[Checkpoint] = []
    _run(pretrained_cnn, digits, _config(epochs=1), on_epoch=lambda m, c: checkpoints.append(c))
    assert checkpoints[0]["grad_scaler"] is None


def test_channels_last_run_hands_back_contiguous_weights_close_to_fp32(pretrained_cnn, digits):
    fp32 = _run(pretrained_cnn, digits, _config())
    channels_last = _run(pretrained_cnn, digits, _config(channels_last=True))
    start = pretrained_cnn.state_dict()
    for name, value in _weights(channels_last).items():
        assert value.is_contiguous(), name  # safetensors saves only contiguous tensors
        # The layouts' kernels round differently (by CPU: up to 1.4e-3 apart on an AMD EPYC),
        # and PGD's signs carry that on; the runs stay far closer than either moved.
        reference = _weights(fp32)[name]
        apart, moved = (value - reference).norm(), (reference - start[name]).norm()
        assert apart < 0.1 * moved, (name, float(apart), float(moved))


def test_compiled_run_saves_and_returns_the_modules_own_keys(pretrained_cnn, digits):
    keys = list(pretrained_cnn.state_dict())
    checkpoints: list[Checkpoint] = []
    result = adversarial_finetune(
        pretrained_cnn,
        digits.train.subset(torch.arange(128)),
        THREAT,
        FinetuneConfig(epochs=1, batch_size=64, peak_lr=0.1, seed=1, compile=True),
        device="cpu",
        on_epoch=lambda metrics, checkpoint: checkpoints.append(checkpoint),
    )
    assert list(result.model.state_dict()) == keys
    assert list(checkpoints[0]["model"]) == keys
    assert list(checkpoints[0]["best"]["model"]) == keys
    assert not isinstance(result.model, torch._dynamo.eval_frame.OptimizedModule)
