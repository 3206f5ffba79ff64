"""Random crop and flip on batches, and train_clean's optional augmentation."""

from __future__ import annotations

import torch

from core.robust.datasets.augment import random_crop_flip
from core.robust.datasets.loading import ImageDataset
from core.robust.pretrain import train_clean


def _batch(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, 12, 10, generator=torch.Generator().manual_seed(0))


def test_crop_flip_keeps_shape_dtype_and_range() -> None:
    x = _batch()
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=4)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert not torch.equal(out, x)  # 16 images: some crop moved


def test_crop_flip_is_fixed_by_the_seed() -> None:
    x = _batch()
    first = random_crop_flip(x, torch.Generator().manual_seed(7))
    again = random_crop_flip(x, torch.Generator().manual_seed(7))
    other = random_crop_flip(x, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_padding_zero_with_flip_only_mirrors() -> None:
    x = _batch(32)
    out = random_crop_flip(x, torch.Generator().manual_seed(3), padding=0, flip=True)
    mirrored = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    unchanged = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert any(mirrored) and any(unchanged)


def test_no_flip_never_mirrors() -> None:
    # A left-right asymmetric image: column index as intensity. A crop shifts the ramp (zeros
    # come in at one side) but without the flip it always rises from left to right.
    ramp = torch.linspace(0.1, 1.0, 10).expand(64, 3, 12, 10).contiguous()
    out = random_crop_flip(ramp, torch.Generator().manual_seed(5), padding=3, flip=False)
    differences = out[..., 1:] - out[..., :-1]
    inside = (out[..., 1:] > 0) & (out[..., :-1] > 0)
    assert bool((differences[inside] > 0).all())
    # And with the flip, some images do fall from left to right.
    flipped = random_crop_flip(ramp, torch.Generator().manual_seed(5), padding=3, flip=True)
    falling = ((flipped[..., 1:] - flipped[..., :-1]) < 0) & (flipped[..., 1:] > 0)
    assert bool(falling.any())


def _tiny_training_set() -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    return ImageDataset(
        torch.rand(40, 1, 8, 8, generator=generator),
        torch.randint(0, 3, (40,), generator=generator),
    )


def _tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))


def test_train_clean_without_augment_is_unchanged() -> None:
    data = _tiny_training_set()
    plain = train_clean(_tiny_net(), data, epochs=2, batch_size=16, seed=3, device="cpu")
    explicit = train_clean(
        _tiny_net(), data, epochs=2, batch_size=16, seed=3, device="cpu", augment=None
    )
    for a, b in zip(plain.state_dict().values(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_clean_applies_the_augmentation() -> None:
    data = _tiny_training_set()
    plain = train_clean(_tiny_net(), data, epochs=2, batch_size=16, seed=3, device="cpu")
    augmented = train_clean(
        _tiny_net(), data, epochs=2, batch_size=16, seed=3, device="cpu", augment=random_crop_flip
    )
    again = train_clean(
        _tiny_net(), data, epochs=2, batch_size=16, seed=3, device="cpu", augment=random_crop_flip
    )
    weights = [p for p in augmented.state_dict().values()]
    assert any(
        not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), weights, strict=True)
    )
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), weights, strict=True))
