"""ImageFolder archives streamed from disk: the same batches, the same training and the same
checks as the in-memory path, without holding the images."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.robust.datasets.loading import DatasetSplits, ImageDataset, load_dataset
from core.robust.datasets.streamed import StreamedImageDataset
from core.robust.errors import DatasetError
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.models.architectures import build_architecture
from core.robust.threat import ThreatModel

CLASSES = ("apple", "banana", "cherry")
# One byte: every split passes it, so everything streams.
STREAM_EVERYTHING = 1


def write_image_folder(root: Path, *, per_class: int, size: int = 8, seed: int = 0) -> None:
    """`per_class` grayscale PNGs per class, each class a little brighter than the last."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            noise = rng.integers(0, 120, size=(size, size))
            pixels = np.clip(noise + 60 * label, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(folder).as_posix())
    return archive


@pytest.fixture()
def fruit_archive(tmp_path: Path) -> Path:
    write_image_folder(tmp_path / "fruit", per_class=20)
    return zip_folder(tmp_path / "fruit", tmp_path / "fruit.zip")


def all_batches(data: DatasetSplits, *, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.train.batches(16, generator=torch.Generator().manual_seed(seed)))


def test_streamed_archive_gives_the_in_memory_batches(fruit_archive: Path) -> None:
    in_memory = load_dataset(fruit_archive)
    streamed = load_dataset(fruit_archive, stream_threshold_bytes=STREAM_EVERYTHING)

    assert isinstance(in_memory.train, ImageDataset)
    assert isinstance(streamed.train, StreamedImageDataset)
    assert streamed.input_shape == in_memory.input_shape == (1, 8, 8)
    assert len(streamed.train) == len(in_memory.train) == 48
    expected, got = all_batches(in_memory, seed=5), all_batches(streamed, seed=5)
    assert len(got) == len(expected) == 3
    for (x_memory, y_memory), (x_streamed, y_streamed) in zip(expected, got, strict=True):
        assert x_streamed.dtype == torch.float32
        assert torch.equal(x_streamed, x_memory)
        assert torch.equal(y_streamed, y_memory)
    # A different seed is a different order: the generator, not the loader, decides it.
    assert not torch.equal(all_batches(streamed, seed=6)[0][1], got[0][1])
    assert torch.equal(streamed.test.tensors()[0], in_memory.test.tensors()[0])


def test_streamed_subset_is_held_in_memory_when_small(fruit_archive: Path) -> None:
    streamed = load_dataset(fruit_archive, stream_threshold_bytes=10 * 64)
    assert isinstance(streamed.train, StreamedImageDataset)
    in_memory = load_dataset(fruit_archive)
    chosen = torch.tensor([7, 3, 40])

    small = streamed.train.subset(chosen)
    large = streamed.train.subset(torch.arange(20))

    assert isinstance(small, ImageDataset)
    assert isinstance(large, StreamedImageDataset)
    assert torch.equal(small.tensors()[0], in_memory.train.batch(chosen)[0])
    assert torch.equal(large.tensors()[0], in_memory.train.tensors(20)[0])


def test_one_streamed_epoch_trains_the_same_weights(fruit_archive: Path) -> None:
    threat = ThreatModel(norm="linf", epsilon=0.1, steps=3)
    config = FinetuneConfig(epochs=1, batch_size=16, peak_lr=0.05, seed=0)
    in_memory = load_dataset(fruit_archive)
    streamed = load_dataset(fruit_archive, stream_threshold_bytes=STREAM_EVERYTHING)
    torch.manual_seed(0)
    start = build_architecture("builtin:digits_cnn", input_shape=(1, 8, 8), num_classes=3)

    weights = []
    for data in (in_memory, streamed):
        result = adversarial_finetune(start, data.train, threat, config, device="cpu")
        weights.append(result.model.state_dict())

    from_memory, from_disk = weights
    assert from_memory.keys() == from_disk.keys() == start.state_dict().keys()
    for name, tensor in from_memory.items():
        assert torch.equal(tensor, from_disk[name]), name
    # Equal because the same epoch ran, not because none did: the weights moved.
    assert any(
        not torch.equal(tensor, from_disk[name]) for name, tensor in start.state_dict().items()
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_broken_image_in_a_streamed_set_fails_the_load(tmp_path: Path, damage: str) -> None:
    write_image_folder(tmp_path / "fruit", per_class=20)
    broken = tmp_path / "fruit" / "banana" / "003.png"
    content = broken.read_bytes()
    # Truncated: the header (size, mode) still reads; only the pixel data is cut short.
    broken.write_bytes(b"not an image at all" if damage == "garbage" else content[:-20])
    archive = zip_folder(tmp_path / "fruit", tmp_path / "fruit.zip")

    with pytest.raises(DatasetError, match=r"banana/003\.png"):
        load_dataset(archive, stream_threshold_bytes=STREAM_EVERYTHING)


def test_worker_processes_give_the_same_batches(fruit_archive: Path) -> None:
    alone = load_dataset(fruit_archive, stream_threshold_bytes=STREAM_EVERYTHING)
    with_workers = load_dataset(
        fruit_archive, stream_threshold_bytes=STREAM_EVERYTHING, stream_workers=2
    )

    expected, got = all_batches(alone, seed=1), all_batches(with_workers, seed=1)
    assert len(got) == len(expected)
    for (x_alone, y_alone), (x_workers, y_workers) in zip(expected, got, strict=True):
        assert torch.equal(x_workers, x_alone)
        assert torch.equal(y_workers, y_alone)


def test_streamed_scratch_folder_lives_with_the_dataset(fruit_archive: Path) -> None:
    data = load_dataset(fruit_archive, stream_threshold_bytes=STREAM_EVERYTHING)
    assert isinstance(data.train, StreamedImageDataset)
    folder = data.train.root
    held_out = data.train.subset(torch.arange(40))
    assert folder.is_dir()

    del data
    assert folder.is_dir()  # the subset still reads from it
    del held_out
    assert not folder.exists()


# Run in a fresh interpreter: a process that has already freed large buffers keeps their pages
# resident, so a later load reuses them and its peak RSS need not rise at all (seen in CI,
# where this test ran after a thousand others in one process).
_MEASURE_AN_EPOCH = """
import sys
from pathlib import Path

import torch

from core.robust.datasets.loading import load_dataset
from core.robust.datasets.streamed import StreamedImageDataset


def status_bytes(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no " + field + " in /proc/self/status")


def read_an_epoch(archive, threshold):
    data = load_dataset(archive, stream_threshold_bytes=threshold)
    images = sum(len(x) for x, _ in data.train.batches(16, generator=torch.Generator()))
    assert images == len(data.train), (images, len(data.train))
    return isinstance(data.train, StreamedImageDataset)


archive, threshold, warm_up = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
# What a first load pays once (lazy imports, the loader's machinery) is not the images' cost:
# a small set streamed first, which holds too little to leave pages for the measure to reuse.
read_an_epoch(warm_up, 1)
# Linux: "5" resets VmHWM (the peak RSS) to the current RSS.
Path("/proc/self/clear_refs").write_text("5")
before = status_bytes("VmRSS")
streamed = read_an_epoch(archive, threshold)
print(status_bytes("VmHWM") - before, int(streamed))
"""


def _peak_growth_of_an_epoch(archive: Path, *, threshold: int, warm_up: Path) -> int:
    """Bytes the peak RSS rose while loading `archive` and reading one epoch of it, in a new
    process that has read `warm_up` first."""
    finished = subprocess.run(
        [sys.executable, "-c", _MEASURE_AN_EPOCH, str(archive), str(threshold), str(warm_up)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    growth, streamed = (int(word) for word in finished.stdout.split())
    assert bool(streamed) == (threshold == STREAM_EVERYTHING)
    return growth


def _write_flat_images(root: Path, *, per_class: int, size: int) -> None:
    # Near-constant images: large when decoded, tiny as PNGs, so the archive is quick to write.
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            pixels = np.full((size, size), 50 * label + index % 7, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")


def test_streaming_memory_does_not_grow_with_the_images(tmp_path: Path) -> None:
    # 192x192 grayscale: 36 KiB decoded an image, 35 MiB of training pixels for 1,200 images.
    archives = {}
    for per_class in (10, 100, 400):
        _write_flat_images(tmp_path / f"set{per_class}", per_class=per_class, size=192)
        archives[per_class] = zip_folder(
            tmp_path / f"set{per_class}", tmp_path / f"{per_class}.zip"
        )
    train_pixels = 3 * 400 * 4 // 5 * 192 * 192
    warm_up = archives[10]

    # The allocator's noise is a few MiB either way: the least of two runs each.
    streamed = {
        n: min(
            _peak_growth_of_an_epoch(archives[n], threshold=STREAM_EVERYTHING, warm_up=warm_up)
            for _ in range(2)
        )
        for n in (100, 400)
    }
    in_memory = _peak_growth_of_an_epoch(archives[400], threshold=1024**3, warm_up=warm_up)

    measured = f"peak growth: in memory {in_memory}, streamed {streamed}"
    # The measure sees what is held: in memory, the training pixels at least.
    assert in_memory >= train_pixels, measured
    # Streamed, 4x the images holds no more than a small part of their pixels.
    assert streamed[400] < train_pixels / 4, measured
    assert streamed[400] - streamed[100] < train_pixels / 8, measured
