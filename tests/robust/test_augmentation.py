"""Augmentation as a fine-tuning knob: the transforms (crop and flip, resized crop), the default a
dataset gets, and adversarial_finetune with it on: off reproduces the run without it, on it
resumes bit for bit and still hardens."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from test_defaults_on_real_shapes import pgd20 as real_shape_pgd20
from test_defaults_on_real_shapes import small_bn_cnn

from core.robust.augmentation_choice import AUGMENTATIONS, default_augmentation
from core.robust.checkpoint import load_checkpoint, save_checkpoint
from core.robust.datasets.augment import augmentation_for, random_crop_flip, random_resized_crop
from core.robust.datasets.loading import load_digits32, with_validation
from core.robust.errors import InvalidConfig
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.pretrain import train_clean
from core.robust.threat import ThreatModel

THREAT = ThreatModel(norm="linf", epsilon=0.2, steps=5)


def _images(n: int = 32, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["standard", "imagenet"])
def test_each_augmentation_keeps_shape_dtype_and_range(name: str) -> None:
    augment = augmentation_for(name)
    assert augment is not None
    x = _images()
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert not torch.equal(out, x)


@pytest.mark.parametrize("name", ["standard", "imagenet"])
def test_each_augmentation_is_a_function_of_its_seed(name: str) -> None:
    augment = augmentation_for(name)
    assert augment is not None
    x = _images()
    first = augment(x, torch.Generator().manual_seed(7))
    again = augment(x, torch.Generator().manual_seed(7))
    other = augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_standard_is_a_crop_of_the_image_padded_by_4_pixels() -> None:
    x = _images(n=8, side=12)
    out = random_crop_flip(x, torch.Generator().manual_seed(3))
    # The same draws, in the same order, by hand: offsets (rows, columns), then the flips.
    draws = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 9, (2, 8), generator=draws)
    mirror = torch.rand(8, generator=draws) < 0.5
    for index in range(8):
        padded = F.pad(x[index], (4, 4, 4, 4))
        top, left = int(offsets[0, index]), int(offsets[1, index])
        crop = padded[:, top : top + 12, left : left + 12]
        expected = crop.flip(-1) if mirror[index] else crop
        assert torch.equal(out[index], expected), index
    assert bool(mirror.any()) and not bool(mirror.all())  # both branches were checked


def test_a_full_size_resized_crop_is_the_image_or_its_mirror() -> None:
    x = _images(n=32, side=16)
    out = random_resized_crop(x, torch.Generator().manual_seed(2), scale=(1.0, 1.0), ratio=(1, 1))
    mirrored = [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x, strict=True)]
    same = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True))
    assert any(mirrored) and any(same)


def test_a_resized_crop_enlarges_a_part_of_the_image() -> None:
    # A ramp rising left to right (1/31 a pixel): a crop of a quarter of the area is half the
    # width, 16 pixels stretched to 32, whose pixel centres span 15.5 input pixels; without the
    # flip it never falls.
    ramp = torch.linspace(0.0, 1.0, 32).expand(16, 3, 32, 32).contiguous()
    out = random_resized_crop(
        ramp, torch.Generator().manual_seed(4), scale=(0.25, 0.25), ratio=(1, 1), flip=False
    )
    spans = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert torch.allclose(spans, torch.full_like(spans, 15.5 / 31), atol=1e-4)
    assert bool((out[..., 1:] >= out[..., :-1] - 1e-6).all())


def test_names_resolve_to_their_transforms() -> None:
    assert augmentation_for("none") is None
    assert augmentation_for("standard") is random_crop_flip
    assert augmentation_for("imagenet") is random_resized_crop
    with pytest.raises(InvalidConfig, match="augmentation must be one of"):
        augmentation_for("cutmix")
    with pytest.raises(InvalidConfig, match="augmentation must be one of"):
        FinetuneConfig(augmentation="cutmix")  # type: ignore[arg-type]
    assert AUGMENTATIONS == ("none", "standard", "imagenet")


@pytest.mark.parametrize(
    ("dataset", "shape", "expected"),
    [
        ("builtin:digits", (1, 8, 8), "none"),
        ("builtin:digits32", (3, 32, 32), "none"),  # 32 pixels, but digits never flip
        ("builtin:mnist", (1, 28, 28), "none"),
        ("builtin:cifar10", (3, 32, 32), "standard"),
        ("ds_uploaded", (3, 32, 32), "standard"),
        ("ds_uploaded", (1, 12, 12), "none"),
        ("ds_uploaded", (3, 64, 64), "standard"),
        ("ds_uploaded", (3, 224, 224), "imagenet"),
    ],
)
def test_auto_chooses_by_the_data(dataset: str, shape: tuple[int, int, int], expected: str) -> None:
    assert default_augmentation(dataset=dataset, input_shape=shape) == expected


def test_the_auto_rule_loads_without_torch() -> None:
    check = "import sys, core.robust.augmentation_choice; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _run(model, train, val, **knobs):  # type: ignore[no-untyped-def]
    config = FinetuneConfig(epochs=1, batch_size=64, peak_lr=0.05, seed=5, **knobs)
    return adversarial_finetune(model, train, THREAT, config, val=val, device="cpu")


def test_augmentation_none_trains_exactly_as_a_config_without_it(pretrained_cnn, digits) -> None:
    train, val = digits.train.subset(torch.arange(256)), digits.test.subset(torch.arange(100))
    without = _run(pretrained_cnn, train, val)
    none = _run(pretrained_cnn, train, val, augmentation="none")
    standard = _run(pretrained_cnn, train, val, augmentation="standard")
    for name, value in without.model.state_dict().items():
        assert torch.equal(value, none.model.state_dict()[name]), name
    # ...and the knob is live: on, the same run ends elsewhere.
    assert any(
        not torch.equal(value, standard.model.state_dict()[name])
        for name, value in without.model.state_dict().items()
    )


def test_a_resumed_run_with_augmentation_is_bit_identical(pretrained_cnn, digits, tmp_path):
    train, val = digits.train.subset(torch.arange(320)), digits.test.subset(torch.arange(100))
    # peak_lr None: the probe's trials augment too (they inherit the config).
    config = FinetuneConfig(epochs=3, batch_size=64, seed=3, augmentation="standard")
    full = adversarial_finetune(pretrained_cnn, train, THREAT, config, val=val, device="cpu")

    def save(metrics, checkpoint):  # type: ignore[no-untyped-def]
        save_checkpoint(checkpoint, tmp_path / f"epoch-{metrics.epoch}.pt")

    batches_seen: list[int] = []
    interrupted = adversarial_finetune(
        pretrained_cnn, train, THREAT, config, val=val, device="cpu", on_epoch=save,
        on_batch=lambda epoch, step, steps, loss: batches_seen.append(epoch),
        should_stop=lambda: batches_seen.count(2) >= 2,
    )  # fmt: skip
    assert interrupted.stopped and len(interrupted.history) == 1
    resumed = adversarial_finetune(
        pretrained_cnn, train, THREAT, config, val=val, device="cpu",
        resume=load_checkpoint(tmp_path / "epoch-1.pt"),
    )  # fmt: skip
    assert [m.epoch for m in resumed.history] == [1, 2, 3]
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert [m.train_loss for m in resumed.history] == [m.train_loss for m in full.history]


def test_a_checkpoint_from_before_augmentation_still_resumes(pretrained_cnn, digits, tmp_path):
    train, val = digits.train.subset(torch.arange(128)), digits.test.subset(torch.arange(50))
    config = FinetuneConfig(epochs=2, batch_size=64, peak_lr=0.05, seed=1)
    full = adversarial_finetune(
        pretrained_cnn, train, THREAT, config, val=val, device="cpu",
        on_epoch=lambda metrics, checkpoint: save_checkpoint(
            checkpoint, tmp_path / f"epoch-{metrics.epoch}.pt"
        ),
    )  # fmt: skip
    old = load_checkpoint(tmp_path / "epoch-1.pt")
    # As saved before the field and its generator existed.
    del old["config"]["augmentation"], old["rng"]["augment"]
    resumed = adversarial_finetune(
        pretrained_cnn, train, THREAT, config, val=val, device="cpu", resume=old
    )
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_a_batchnorm_network_on_3x32x32_hardens_with_crops_and_flips() -> None:
    # digits32 gets "none" by default, and this run shows why: the clean model knows 39% of
    # the mirrored training digits, so with crops and flips a few epochs cost it clean
    # accuracy, and at max_clean_drop 0.03 the run hands back a mix close to the starting
    # weights (1-7% PGD accuracy against 52% without augmentation, 3 epochs). With a looser
    # clean constraint the question is only whether a run on a real shape hardens with the
    # crops and flips in the loop (measured: 0% -> 21% PGD-20, 85% clean).
    digits32 = with_validation(load_digits32(), fraction=0.1, seed=0)
    torch.manual_seed(0)
    model = train_clean(small_bn_cnn(), digits32.train, epochs=15, lr=0.1, device="cpu")
    threat = ThreatModel(norm="linf", epsilon=8 / 255, steps=5)
    _, robust_before = real_shape_pgd20(model, digits32)

    config = FinetuneConfig(epochs=5, peak_lr=0.06, max_clean_drop=0.1, augmentation="standard")
    result = adversarial_finetune(
        model, digits32.train, threat, config, val=digits32.val, device="cpu"
    )

    clean_after, robust_after = real_shape_pgd20(result.model, digits32)
    assert robust_after >= robust_before + 0.10, (robust_before, robust_after)
    assert clean_after > 0.75, clean_after
