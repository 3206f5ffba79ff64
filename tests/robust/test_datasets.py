"""load_dataset reads builtin digits, torchvision folders, .npz files and ImageFolder archives."""

from __future__ import annotations

import struct
import subprocess
import sys
import tarfile
import zipfile
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.robust.datasets.loading import load_dataset, validation_holdout_size, with_validation
from core.robust.errors import DatasetError

# ---------------------------------------------------------------- ImageFolder archives


def write_image_tree(
    root: Path,
    classes: tuple[str, ...],
    *,
    per_class: int = 10,
    size: tuple[int, int] = (8, 8),
    mode: str = "RGB",
    seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """PNG files root/<class>/img<i>.png; returns each class's pixels (HWC or HW) in file order."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    height, width = size
    for name in classes:
        (root / name).mkdir(parents=True)
        written[name] = []
        for index in range(per_class):
            shape = (height, width) if mode == "L" else (height, width, 3)
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{index:02d}.png")
            written[name].append(pixels)
    return written


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(folder).as_posix())
    return archive


def targz_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tarred:
        for path in sorted(folder.iterdir()):
            tarred.add(path, path.name)
    return archive


def as_nchw(images: list[np.ndarray]) -> torch.Tensor:
    stacked = np.stack(images)
    if stacked.ndim == 3:
        return torch.from_numpy(stacked).unsqueeze(1)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2)


def every_fifth(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    is_test = torch.arange(len(images)) % 5 == 0
    return images[~is_test], images[is_test]


def test_image_folder_zip_numbers_classes_by_sorted_name(tmp_path: Path) -> None:
    written = write_image_tree(tmp_path / "tree", ("dog", "cat", "bird"))
    # macOS leftovers must be skipped, not read as images or classes.
    (tmp_path / "tree" / "cat" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / "tree" / "__MACOSX" / "cat").mkdir(parents=True)
    (tmp_path / "tree" / "__MACOSX" / "cat" / "._img00.png").write_bytes(b"junk")
    archive = zip_folder(tmp_path / "tree", tmp_path / "pets.zip")

    splits = load_dataset(archive)

    assert splits.num_classes == 3
    assert splits.input_shape == (3, 8, 8)
    order = ["bird", "cat", "dog"]
    expected = as_nchw([pixels for name in order for pixels in written[name]])
    labels = torch.arange(3).repeat_interleave(10)
    expected_train, expected_test = every_fifth(expected)
    train_labels, test_labels = every_fifth(labels)
    assert splits.train.images.dtype == torch.uint8
    assert torch.equal(splits.train.images, expected_train)
    assert torch.equal(splits.test.images, expected_test)
    assert torch.equal(splits.train.labels, train_labels)
    assert torch.equal(splits.test.labels, test_labels)
    assert (len(splits.train), len(splits.test)) == (24, 6)


def test_image_folder_targz_with_wrapping_folder_loads(tmp_path: Path) -> None:
    written = write_image_tree(tmp_path / "tree" / "my-dataset", ("b", "a"), per_class=5)
    archive = targz_folder(tmp_path / "tree", tmp_path / "data.tar.gz")

    splits = load_dataset(archive)

    assert splits.num_classes == 2
    expected = as_nchw(written["a"] + written["b"])
    expected_train, expected_test = every_fifth(expected)
    assert torch.equal(splits.train.images, expected_train)
    assert torch.equal(splits.test.images, expected_test)


def test_image_folder_train_and_test_folders_are_the_splits(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "tree" / "train", ("x", "y"), per_class=6, seed=1)
    test = write_image_tree(tmp_path / "tree" / "test", ("x", "y"), per_class=2, seed=2)
    archive = zip_folder(tmp_path / "tree", tmp_path / "split.zip")

    splits = load_dataset(archive)

    assert torch.equal(splits.train.images, as_nchw(train["x"] + train["y"]))
    assert torch.equal(splits.test.images, as_nchw(test["x"] + test["y"]))
    assert splits.train.labels.tolist() == [0] * 6 + [1] * 6
    assert splits.test.labels.tolist() == [0, 0, 1, 1]


def test_image_folder_val_folder_is_the_test_split(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree" / "train", ("x", "y"), per_class=4)
    write_image_tree(tmp_path / "tree" / "val", ("x", "y"), per_class=1)
    splits = load_dataset(zip_folder(tmp_path / "tree", tmp_path / "split.zip"))
    assert (len(splits.train), len(splits.test)) == (8, 2)
    assert splits.val is None  # only train/ and val/: val/ is the test split, as before


def test_image_folder_val_beside_test_is_the_validation_split(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree" / "train", ("x", "y"), per_class=4)
    write_image_tree(tmp_path / "tree" / "val", ("x", "y"), per_class=2, seed=1)
    write_image_tree(tmp_path / "tree" / "test", ("x", "y"), per_class=1, seed=2)
    splits = load_dataset(zip_folder(tmp_path / "tree", tmp_path / "split.zip"))
    assert splits.val is not None
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 2)
    assert splits.val.labels.tolist() == [0, 0, 1, 1]


def test_all_grayscale_images_keep_one_channel(tmp_path: Path) -> None:
    written = write_image_tree(tmp_path / "tree", ("a", "b"), per_class=5, mode="L")
    splits = load_dataset(zip_folder(tmp_path / "tree", tmp_path / "gray.zip"))
    assert splits.input_shape == (1, 8, 8)
    expected_train, _ = every_fifth(as_nchw(written["a"] + written["b"]))
    assert torch.equal(splits.train.images, expected_train)


def test_mixed_grayscale_and_color_become_rgb(tmp_path: Path) -> None:
    gray = write_image_tree(tmp_path / "tree", ("a",), per_class=5, mode="L")
    write_image_tree(tmp_path / "tree", ("b",), per_class=5, mode="RGB")
    splits = load_dataset(zip_folder(tmp_path / "tree", tmp_path / "mixed.zip"))
    assert splits.input_shape == (3, 8, 8)
    first_gray = splits.test.images[0]  # index 0 is a test image and belongs to class "a"
    for channel in range(3):
        assert torch.equal(first_gray[channel], torch.from_numpy(gray["a"][0]))


def test_mixed_sizes_without_image_size_name_both_files(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree", ("a",), per_class=3, size=(8, 8))
    write_image_tree(tmp_path / "tree", ("b",), per_class=3, size=(6, 10))
    archive = zip_folder(tmp_path / "tree", tmp_path / "sizes.zip")
    with pytest.raises(DatasetError, match="image_size") as caught:
        load_dataset(archive)
    message = str(caught.value)
    assert "a/img00.png" in message and "8x8" in message
    assert "b/img00.png" in message and "10x6" in message


def test_mixed_sizes_with_image_size_are_resized(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree", ("a",), per_class=5, size=(8, 8))
    write_image_tree(tmp_path / "tree", ("b",), per_class=5, size=(16, 12))
    archive = zip_folder(tmp_path / "tree", tmp_path / "sizes.zip")
    splits = load_dataset(archive, image_size=(6, 5))
    assert splits.train.images.shape == (8, 3, 6, 5)
    assert splits.test.images.shape == (2, 3, 6, 5)


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree", ("a", "b"), per_class=3)
    (tmp_path / "tree" / "b" / "broken.png").write_bytes(b"this is not a png")
    archive = zip_folder(tmp_path / "tree", tmp_path / "broken.zip")
    with pytest.raises(DatasetError, match=r"b/broken\.png"):
        load_dataset(archive)


def test_single_class_archive_is_refused(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree", ("only",), per_class=3)
    (tmp_path / "tree" / "only" / "nested").mkdir()
    archive = zip_folder(tmp_path / "tree", tmp_path / "one.zip")
    with pytest.raises(DatasetError, match="at least 2 classes"):
        load_dataset(archive)


def test_unsafe_image_folder_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("a/img.png", b"x")
        zipped.writestr("../b/img.png", b"x")
    with pytest.raises(DatasetError, match=r"\.\./b/img\.png"):
        load_dataset(archive)


# ---------------------------------------------------------------- .npz


def test_npz_uint8_nhwc_loads_as_nchw_uint8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 6, 5, 3), dtype=np.uint8)
    y = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)

    splits = load_dataset(tmp_path / "d.npz")

    expected = torch.from_numpy(x).permute(0, 3, 1, 2)
    expected_train, expected_test = every_fifth(expected)
    assert splits.train.images.dtype == torch.uint8
    assert torch.equal(splits.train.images, expected_train)
    assert torch.equal(splits.test.images, expected_test)
    images, labels = splits.train.tensors()
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert torch.allclose(images, expected_train.float() / 255)
    assert labels.tolist() == [i % 4 for i in range(20) if i % 5]
    assert splits.num_classes == 4


def test_npz_uint8_grayscale_nhw_gets_one_channel(tmp_path: Path) -> None:
    x = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 2)
    splits = load_dataset(tmp_path / "d.npz")
    assert splits.input_shape == (1, 4, 4)
    assert torch.equal(splits.test.images[:, 0], torch.from_numpy(x[::5]))


def test_npz_float_nchw_with_test_split_loads_as_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((12, 1, 5, 5), dtype=np.float32)
    x_test = rng.random((4, 1, 5, 5), dtype=np.float32)
    np.savez_compressed(
        tmp_path / "d.npz", x=x, y=np.arange(12) % 3, x_test=x_test, y_test=np.array([0, 1, 2, 4])
    )

    splits = load_dataset(tmp_path / "d.npz")

    assert torch.equal(splits.train.images, torch.from_numpy(x))
    assert torch.equal(splits.test.images, torch.from_numpy(x_test))
    assert splits.test.labels.tolist() == [0, 1, 2, 4]
    assert splits.num_classes == 5  # the largest label of either split, plus one


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x": np.zeros((4, 2, 2), np.uint8)}, r"missing key 'y'"),
        ({"y": np.zeros(4, np.int64)}, r"missing key 'x'"),
        (
            {"x": np.zeros((4, 2, 2), np.uint8), "y": np.arange(4), "x_test": np.zeros((2, 2, 2))},
            r"'x_test' but not 'y_test'",
        ),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.arange(3)}, r"'y' has 3 labels.*'x' has 4"),
        ({"x": np.full((4, 1, 2, 2), 1.5), "y": np.arange(4)}, r"'x' has values in \[1\.5, 1\.5\]"),
        ({"x": np.full((4, 1, 2, 2), np.nan), "y": np.arange(4)}, r"'x' has NaN"),
        ({"x": np.zeros((4, 3, 8, 8), np.uint8), "y": np.arange(4)}, r"'x' is uint8.*NCHW"),
        ({"x": np.zeros((4, 2, 2), np.int64), "y": np.arange(4)}, r"'x' has dtype int64"),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.arange(4) - 1}, r"'y' has the label -1"),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.zeros(4)}, r"'y' has dtype float64"),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.zeros(4, np.int64)}, r"at least 2 classes"),
    ],
    ids=[
        "no-y",
        "no-x",
        "x_test-alone",
        "lengths",
        "out-of-range",
        "nan",
        "uint8-nchw",
        "int-images",
        "negative-label",
        "float-labels",
        "one-class",
    ],
)
def test_malformed_npz_is_refused_naming_the_key(
    tmp_path: Path, arrays: dict[str, Any], pattern: str
) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DatasetError, match=pattern):
        load_dataset(tmp_path / "bad.npz")


def test_npz_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    objects = np.empty(4, dtype=object)
    objects[:] = [np.zeros((2, 2), np.uint8)] * 4
    np.savez(tmp_path / "pickled.npz", x=objects, y=np.arange(4))
    with pytest.raises(DatasetError, match=r"key 'x' is an object array.*pickle"):
        load_dataset(tmp_path / "pickled.npz")


def test_npz_larger_in_memory_than_allowed_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.robust.datasets.npz.MAX_ARRAY_BYTES", 1_000)
    np.savez_compressed(
        tmp_path / "big.npz", x=np.zeros((100, 4, 4, 3), np.uint8), y=np.arange(100)
    )
    with pytest.raises(DatasetError, match="more than 1000"):
        load_dataset(tmp_path / "big.npz")


# ---------------------------------------------------------------- builtin:digits


def test_builtin_digits_split_every_fifth_image_into_test() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    splits = load_dataset("builtin:digits")

    assert (len(splits.train), len(splits.test)) == (1437, 360)
    assert splits.input_shape == (1, 8, 8)
    assert splits.num_classes == 10
    test_images, test_labels = splits.test.tensors()
    train_images, _ = splits.train.tensors()
    assert 0.0 <= min(test_images.min(), train_images.min())
    assert max(test_images.max(), train_images.max()) <= 1.0
    expected = torch.from_numpy(bunch.images[::5] / 16.0).float().unsqueeze(1)
    assert torch.allclose(test_images, expected)
    assert test_labels.tolist() == bunch.target[::5].tolist()
    is_train = np.arange(len(bunch.target)) % 5 != 0
    assert splits.train.labels.tolist() == bunch.target[is_train].tolist()


def test_builtin_digits32_is_the_digits_upscaled_and_tinted_in_colour() -> None:
    digits = load_dataset("builtin:digits")
    splits = load_dataset("builtin:digits32")

    assert (len(splits.train), len(splits.test)) == (1437, 360)
    assert splits.input_shape == (3, 32, 32)
    assert splits.num_classes == 10
    assert torch.equal(splits.train.labels, digits.train.labels)
    assert torch.equal(splits.test.labels, digits.test.labels)
    images = torch.cat([splits.train.tensors()[0], splits.test.tensors()[0]])
    assert 0.0 <= images.min() and images.max() <= 1.0
    # Per-image tints: the channels differ, and not by one fixed colour for every image.
    assert (images[:, 0] - images[:, 1]).abs().mean() > 0.05
    assert (images[:, 1] - images[:, 2]).abs().mean() > 0.05
    assert images[:, :, 0, 0].std(0).min() > 0.05
    # Still the same digit: each image's brightness, pooled to 8x8, follows the 8x8 ink.
    ink = digits.test.tensors()[0].flatten(1)
    pooled = torch.nn.functional.adaptive_avg_pool2d(splits.test.tensors()[0].mean(1), 8)
    correlation = torch.corrcoef(torch.stack([ink.flatten(), pooled.flatten()]))[0, 1]
    assert correlation > 0.9


def test_builtin_digits32_is_the_same_on_every_call() -> None:
    first = load_dataset("builtin:digits32")
    first.train.images[:] = 0  # a caller writing into its copy must not change the next one
    second = load_dataset("builtin:digits32")
    third = load_dataset("builtin:digits32")

    assert second.train.images.any()
    assert torch.equal(second.train.images, third.train.images)
    assert torch.equal(second.test.images, third.test.images)
    # Built again from nothing (as in a new process), the tints come from the fixed seed.
    from core.robust.datasets import digits

    rebuilt, _ = digits._digits32_tensors.__wrapped__()
    assert torch.equal(rebuilt[0::5], third.test.images)


# ---------------------------------------------------------------- torchvision folders


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file (MNIST's format): magic (uint8 type 0x08, ndim), big-endian dims."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_is_read_from_idx_files_in_the_data_dir(
    tmp_path: Path, name: str, folder: str
) -> None:
    rng = np.random.default_rng(3)
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    train_x = rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)
    train_y = rng.integers(0, 10, size=20, dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(10, 28, 28), dtype=np.uint8)
    test_y = rng.integers(0, 10, size=10, dtype=np.uint8)
    write_idx(raw / "train-images-idx3-ubyte", train_x)
    write_idx(raw / "train-labels-idx1-ubyte", train_y)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y)

    splits = load_dataset(f"builtin:{name}", data_dir=tmp_path)

    assert splits.name == f"builtin:{name}"
    assert splits.num_classes == 10
    assert splits.train.images.shape == (20, 1, 28, 28)
    assert splits.train.images.dtype == torch.uint8
    assert torch.equal(splits.train.images[:, 0], torch.from_numpy(train_x))
    assert torch.equal(splits.test.images[:, 0], torch.from_numpy(test_x))
    assert splits.train.labels.tolist() == train_y.tolist()
    assert splits.test.labels.tolist() == test_y.tolist()


def test_missing_cifar10_names_the_data_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        load_dataset("builtin:cifar10", data_dir=tmp_path, allow_download=False)
    assert str(tmp_path) in str(caught.value)
    assert "ROBUSTIFY_ALLOW_DOWNLOAD" in str(caught.value)


def test_absent_data_folder_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="does not exist") as caught:
        load_dataset("builtin:svhn", data_dir=absent)
    assert str(absent) in str(caught.value)
    assert not absent.exists()


def test_unset_data_folder_is_refused() -> None:
    with pytest.raises(DatasetError, match="ROBUSTIFY_DATA_DIR"):
        load_dataset("builtin:mnist", data_dir=None)


def test_unknown_builtin_name_lists_the_known_ones() -> None:
    with pytest.raises(DatasetError, match=r"unknown builtin dataset 'imagenet'.*builtin:cifar10"):
        load_dataset("builtin:imagenet")


@pytest.mark.parametrize("side", [12, 20], ids=["warned-by-pil", "refused-by-pil"])
def test_decompression_bomb_image_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    # A tiny pixel limit stands in for PIL's real one (about 89 million pixels): 12x12 is over
    # it, where PIL only warns; 20x20 is over twice it, where PIL raises.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    write_image_tree(tmp_path / "tree", ("a", "b"), per_class=2)
    Image.new("RGB", (side, side)).save(tmp_path / "tree" / "b" / "huge.png")
    archive = zip_folder(tmp_path / "tree", tmp_path / "bomb.zip")
    with pytest.warns(Image.DecompressionBombWarning) if side == 12 else nullcontext():
        with pytest.raises(DatasetError, match=r"b/huge\.png"):
            load_dataset(archive)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for index in range(5):
            pixels = np.full((4, 4), 257 * (10 * index + 1), dtype=np.uint16)
            Image.fromarray(pixels).save(tmp_path / "tree" / name / f"img{index}.png")
    splits = load_dataset(zip_folder(tmp_path / "tree", tmp_path / "deep.zip"))
    assert splits.input_shape == (1, 4, 4)
    # Test images are index 0 of each class (value 1) and index 0 mod 5 of the rest.
    assert splits.test.images[:, 0, 0, 0].tolist() == [1, 1]
    assert sorted(set(splits.train.images[:, 0, 0, 0].tolist())) == [11, 21, 31, 41]


def test_npz_with_val_keys_brings_its_own_validation_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x_val = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.savez(
        tmp_path / "d.npz",
        x=np.zeros((10, 4, 4), np.uint8),
        y=np.arange(10) % 2,
        x_val=x_val,
        y_val=np.array([0, 1, 2, 0, 1, 2]),
    )
    splits = load_dataset(tmp_path / "d.npz")
    assert splits.val is not None
    assert torch.equal(splits.val.images[:, 0], torch.from_numpy(x_val))
    assert splits.num_classes == 3  # a label only the validation split has still counts


def test_npz_val_key_alone_is_refused(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "d.npz",
        x=np.zeros((4, 2, 2), np.uint8),
        y=np.arange(4) % 2,
        x_val=np.zeros((2, 2, 2), np.uint8),
    )
    with pytest.raises(DatasetError, match=r"'x_val' but not 'y_val'"):
        load_dataset(tmp_path / "d.npz")


def test_validation_holdout_comes_from_train_and_never_overlaps_test() -> None:
    data = load_dataset("builtin:digits")
    split = with_validation(data, fraction=0.1, seed=3)
    assert split.val is not None
    assert (len(split.val), len(split.train)) == (144, 1437 - 144)  # round(0.1 * 1437)

    # Digits are distinct images per index; compare the raw pixels of each split.
    def rows(images: torch.Tensor) -> set[bytes]:
        return {image.numpy().tobytes() for image in images}

    assert rows(split.val.images).isdisjoint(rows(split.train.images))
    assert torch.equal(split.test.images, data.test.images)
    again = with_validation(data, fraction=0.1, seed=3)
    assert again.val is not None and torch.equal(again.val.images, split.val.images)
    other = with_validation(data, fraction=0.1, seed=4)
    assert other.val is not None and not torch.equal(other.val.images, split.val.images)


@pytest.mark.parametrize(
    ("train_size", "fraction", "expected"),
    [(1437, 0.1, 144), (300, 0.1, 100), (120, 0.1, 60), (1_000_000, 0.1, 5000), (1437, 0.5, 718)],
)
def test_validation_holdout_size_is_clamped(
    train_size: int, fraction: float, expected: int
) -> None:
    assert validation_holdout_size(train_size, fraction) == expected


def test_uploaded_validation_split_is_kept() -> None:
    data = load_dataset("builtin:digits")
    own = data.test.subset(torch.arange(10))
    given = replace(data, val=own)
    assert with_validation(given, fraction=0.1, seed=0).val is own


# ---------------------------------------------------------------- module layout


@pytest.mark.parametrize(
    "loader",
    [
        "core.robust.datasets.digits",
        "core.robust.datasets.imagefolder",
        "core.robust.datasets.npz",
        "core.robust.datasets.torchvision_data",
    ],
)
def test_dataset_loaders_do_not_import_the_dispatcher(loader: str) -> None:
    check = f"import sys, {loader}; sys.exit('core.robust.datasets.loading' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{loader} imported core.robust.datasets.loading: {result.stderr}"
    )
