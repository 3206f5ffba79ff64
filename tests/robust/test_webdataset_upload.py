"""WebDataset tar shards as an upload: samples written by webdataset's own TarWriter load with
their pixels and `.cls` labels, in memory or streamed, split by `train/` and `test/` keys."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from core.robust.datasets.loading import ImageDataset, load_dataset
from core.robust.datasets.streamed import StreamedImageDataset
from core.robust.errors import DatasetError


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bytes_of(sample: dict[str, object]) -> bytes:
    content = sample["png"]
    assert isinstance(content, bytes)
    return content


def write_shard(path: Path, samples: list[dict[str, object]]) -> Path:
    with wds.TarWriter(str(path)) as shard:
        for sample in samples:
            shard.write(sample)
    return path


def digit_samples(count: int, *, prefix: str = "", seed: int = 0) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "__key__": f"{prefix}{index:05d}",
            "png": png_bytes(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)),
            "cls": index % 3,
        }
        for index in range(count)
    ]


def test_shard_loads_its_pixels_and_labels_in_memory_and_streamed(tmp_path: Path) -> None:
    samples = digit_samples(40)
    shard = write_shard(tmp_path / "shard-000000.tar", samples)

    in_memory = load_dataset(shard)
    streamed = load_dataset(shard, stream_threshold_bytes=1)

    assert isinstance(in_memory.train, ImageDataset)
    assert isinstance(streamed.train, StreamedImageDataset)
    assert in_memory.num_classes == 3 and in_memory.input_shape == (1, 8, 8)
    # No split of its own: every fifth sample (by key) is the test split.
    fifth = np.array(Image.open(io.BytesIO(png_bytes_of(samples[5]))))
    test_images, test_labels = in_memory.test.tensors()
    assert torch.equal(test_images[1, 0], torch.from_numpy(fifth).float() / 255.0)
    assert test_labels.tolist() == [index % 3 for index in range(0, 40, 5)]
    for (x_memory, y_memory), (x_streamed, y_streamed) in zip(
        in_memory.train.batches(8, generator=torch.Generator().manual_seed(3)),
        streamed.train.batches(8, generator=torch.Generator().manual_seed(3)),
        strict=True,
    ):
        assert torch.equal(x_memory, x_streamed) and torch.equal(y_memory, y_streamed)


def test_train_and_test_keys_are_the_splits(tmp_path: Path) -> None:
    shard = write_shard(
        tmp_path / "digits.tar",
        digit_samples(30, prefix="train/") + digit_samples(12, prefix="test/", seed=1),
    )

    data = load_dataset(shard)

    assert (len(data.train), len(data.test)) == (30, 12)
    assert data.val is None


def test_sample_without_a_label_is_refused_by_its_key(tmp_path: Path) -> None:
    samples = digit_samples(10)
    del samples[4]["cls"]
    shard = write_shard(tmp_path / "shard.tar", samples)

    with pytest.raises(DatasetError, match=r"'00004' has no \.cls"):
        load_dataset(shard)
