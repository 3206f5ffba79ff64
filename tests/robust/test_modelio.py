"""Safe model I/O: formats round-trip, hostile files are refused without running, shapes checked."""

from __future__ import annotations

import copy
import pathlib
import pickle
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from core.robust.errors import InvalidConfig, ModelLoadError
from core.robust.models.architectures import build_architecture
from core.robust.models.modelio import (
    RobustModel,
    detect_format,
    load_model,
    model_from_module,
    save_model,
)

DIGITS_SHAPE = (1, 8, 8)
DIGITS_CNN = "builtin:digits_cnn"

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


@pytest.fixture
def digits_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_architecture(DIGITS_CNN, input_shape=DIGITS_SHAPE, num_classes=10).eval()


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.rand(4, *DIGITS_SHAPE, generator=torch.Generator().manual_seed(1))


def write_original(net: nn.Module, path: Path, format: str) -> nn.Module:
    """Save `net` the way a user would; returns the module whose outputs the file must keep."""
    if format == "torchscript":
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, str(path))
        return scripted
    if format == "state_dict":
        torch.save(net.state_dict(), path)
    else:
        safetensors.torch.save_model(net, str(path))
    return net


def load_digits_model(path: Path, **overrides: object) -> RobustModel:
    options: dict[str, object] = {
        "input_shape": DIGITS_SHAPE,
        "num_classes": 10,
        "architecture": DIGITS_CNN,
    }
    options.update(overrides)
    return load_model(path, **options)  # type: ignore[arg-type]


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["torchscript", "state_dict", "safetensors"])
def test_round_trip_keeps_format_and_applies_normalization_once(
    format: str, digits_cnn: nn.Module, pixels: torch.Tensor, tmp_path: Path
) -> None:
    original = write_original(digits_cnn, tmp_path / "uploaded", format)

    model = load_digits_model(tmp_path / "uploaded", mean=[0.5], std=[0.25])
    with torch.no_grad():
        assert torch.allclose(model(pixels), original((pixels - 0.5) / 0.25), atol=1e-6)

    save_model(model, tmp_path / "returned")
    assert detect_format(tmp_path / "returned") == format
    reloaded = load_digits_model(tmp_path / "returned")  # no normalization: the bare net
    with torch.no_grad():
        assert torch.allclose(reloaded(pixels), original(pixels), atol=1e-6)


def test_loaded_model_is_in_eval_mode_on_cpu_with_its_spec(
    digits_cnn: nn.Module, tmp_path: Path
) -> None:
    torch.save(digits_cnn.state_dict(), tmp_path / "model.pt")

    model = load_digits_model(tmp_path / "model.pt", mean=(0.1,), std=(0.3,))

    assert not model.training and not model.net.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.spec.format == "state_dict"
    assert model.spec.architecture == DIGITS_CNN
    assert model.spec.mean == (0.1,) and model.spec.std == (0.3,)
    assert model.mean.shape == (1, 1, 1, 1) and model.std.shape == (1, 1, 1, 1)


def test_save_model_format_override_and_no_temp_files_left(
    digits_cnn: nn.Module, pixels: torch.Tensor, tmp_path: Path
) -> None:
    model = model_from_module(digits_cnn, input_shape=DIGITS_SHAPE, num_classes=10)

    save_model(model, tmp_path / "model.ts", format="torchscript")

    assert detect_format(tmp_path / "model.ts") == "torchscript"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ts"]
    reloaded = load_model(tmp_path / "model.ts", input_shape=DIGITS_SHAPE, num_classes=10)
    with torch.no_grad():
        assert torch.allclose(reloaded(pixels), digits_cnn(pixels), atol=1e-6)


class Unscriptable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:  # TorchScript has no try blocks
            return self.linear(torch.flatten(x, 1))
        except RuntimeError:
            raise


def test_failed_save_leaves_existing_file_and_no_temp_file(tmp_path: Path) -> None:
    model = model_from_module(Unscriptable(), input_shape=DIGITS_SHAPE, num_classes=10)
    target = tmp_path / "model.ts"
    target.write_bytes(b"previous version")

    with pytest.raises(ModelLoadError, match="TorchScript"):
        save_model(model, target, format="torchscript")

    assert target.read_bytes() == b"previous version"
    assert [p.name for p in tmp_path.iterdir()] == ["model.ts"]


# --- hostile and malformed files -------------------------------------------------------------


class TouchOnUnpickle:
    """Unpickling this calls Path.touch: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., None], tuple[Path]]:
        return (pathlib.Path.touch, (self.marker,))


def test_payload_runs_under_plain_pickle(tmp_path: Path) -> None:
    # The control for the next test: the payload is live, so its absence there means something.
    marker = tmp_path / "control"
    pickle.loads(pickle.dumps(TouchOnUnpickle(marker)))
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["pickle.dump", "torch.save", "torch.save legacy"])
@pytest.mark.parametrize("declared", [None, "state_dict"])
@pytest.mark.parametrize("inside_state_dict", [False, True], ids=["bare", "in-state_dict"])
def test_pickle_with_code_payload_is_refused_and_never_runs(
    writer: str, declared: str | None, inside_state_dict: bool, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    payload: object = TouchOnUnpickle(marker)
    if inside_state_dict:
        payload = {"0.weight": payload}
    path = tmp_path / "model.pt"
    if writer == "pickle.dump":
        with path.open("wb") as handle:
            pickle.dump(payload, handle)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch.save")

    with pytest.raises(ModelLoadError, match="nothing in it was run"):
        load_digits_model(path, format=declared)

    assert not marker.exists()


def test_payload_in_zip_posing_as_torchscript_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save(TouchOnUnpickle(marker), tmp_path / "payload.pt")
    posing = tmp_path / "posing.pt"
    with zipfile.ZipFile(tmp_path / "payload.pt") as source, zipfile.ZipFile(posing, "w") as out:
        for name in source.namelist():
            out.writestr(name, source.read(name))
        out.writestr("payload/constants.pkl", pickle.dumps(TouchOnUnpickle(marker), protocol=2))
        out.writestr("payload/code/__torch__.py", "")

    assert detect_format(posing) == "torchscript"
    with pytest.raises(ModelLoadError):
        load_digits_model(posing)

    assert not marker.exists()


def crafted_safetensors(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize(
    "content",
    [
        crafted_safetensors(
            b'{"0.weight": {"dtype": "F32", "shape": [1000000000], '
            b'"data_offsets": [0, 4000000000]}}'
        ),
        crafted_safetensors(b'{"0.weight": not json at all}'),
        crafted_safetensors(b'{"0.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}')
        + b"\x00" * 8,
    ],
    ids=["offsets-past-end", "bad-json", "wrong-tensors"],
)
def test_crafted_safetensors_is_refused(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)

    assert detect_format(path) == "safetensors"
    with pytest.raises(ModelLoadError):
        load_digits_model(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" + random.Random(0).randbytes(4095), b"just some text, not a model"],
    ids=["empty", "random-bytes", "text"],
)
def test_unrecognised_bytes_are_refused(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)

    with pytest.raises(
        ModelLoadError, match="not a TorchScript archive, state_dict or safetensors"
    ):
        load_digits_model(path)


def test_missing_file_is_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_digits_model(tmp_path / "absent.pt")


def test_non_tensor_state_dict_is_refused(tmp_path: Path) -> None:
    torch.save({"0.weight": [1, 2, 3]}, tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match=r"'0\.weight' is a list, not a tensor"):
        load_digits_model(tmp_path / "model.pt")


# --- shapes ----------------------------------------------------------------------------------


def test_wrong_num_classes_names_expected_and_actual_shapes(
    digits_cnn: nn.Module, tmp_path: Path
) -> None:
    torch.jit.save(torch.jit.script(digits_cnn), str(tmp_path / "model.ts"))

    with pytest.raises(ModelLoadError, match=r"output shape \[2, 10\]; expected \[2, 5\]"):
        load_model(tmp_path / "model.ts", input_shape=DIGITS_SHAPE, num_classes=5)


def test_wrong_input_shape_names_the_input(digits_cnn: nn.Module, tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(digits_cnn), str(tmp_path / "model.ts"))

    with pytest.raises(ModelLoadError, match=r"forward pass on input \[2, 3, 8, 8\] failed"):
        load_model(tmp_path / "model.ts", input_shape=(3, 8, 8), num_classes=10)


def test_non_tensor_output_is_refused() -> None:
    class ReturnsTuple(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x.flatten(1)[:, :10], x

    with pytest.raises(ModelLoadError, match="returned a tuple"):
        model_from_module(ReturnsTuple(), input_shape=DIGITS_SHAPE, num_classes=10)


def test_state_dict_for_other_num_classes_is_refused(digits_cnn: nn.Module, tmp_path: Path) -> None:
    torch.save(digits_cnn.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="size mismatch"):
        load_digits_model(tmp_path / "model.pt", num_classes=5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mean": [0.5, 0.5, 0.5]}, "mean has 3 values but input_shape has 1 channels"),
        ({"std": [0.0]}, "std values must all be > 0"),
        ({"input_shape": (8, 8)}, "input_shape must be three positive integers"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
    ],
)
def test_bad_declaration_is_refused_before_loading(
    overrides: dict[str, object], message: str, digits_cnn: nn.Module, tmp_path: Path
) -> None:
    torch.save(digits_cnn.state_dict(), tmp_path / "model.pt")
    with pytest.raises(InvalidConfig, match=message):
        load_digits_model(tmp_path / "model.pt", **overrides)


# --- state_dict specifics --------------------------------------------------------------------


def test_state_dict_without_architecture_is_refused(digits_cnn: nn.Module, tmp_path: Path) -> None:
    torch.save(digits_cnn.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="architecture"):
        load_model(tmp_path / "model.pt", input_shape=DIGITS_SHAPE, num_classes=10)


def test_wrong_architecture_names_missing_and_unexpected_keys(
    digits_cnn: nn.Module, tmp_path: Path
) -> None:
    safetensors.torch.save_model(digits_cnn, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError) as caught:
        load_digits_model(tmp_path / "model.safetensors", architecture="builtin:mlp")
    message = str(caught.value)
    assert "missing keys: 1.weight" in message
    assert "unexpected keys: 0.bias, 0.weight" in message


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": sd},
        lambda sd: {"model_state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
    ],
    ids=["dataparallel-prefix", "state_dict-key", "training-checkpoint", "model-key-prefixed"],
)
def test_common_checkpoint_layouts_are_accepted(
    wrap: Callable[[dict[str, torch.Tensor]], object],
    digits_cnn: nn.Module,
    pixels: torch.Tensor,
    tmp_path: Path,
) -> None:
    torch.save(wrap(digits_cnn.state_dict()), tmp_path / "model.pt")

    model = load_digits_model(tmp_path / "model.pt")

    with torch.no_grad():
        assert torch.equal(model(pixels), digits_cnn(pixels))


def test_legacy_non_zip_torch_save_is_read(digits_cnn: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(digits_cnn.state_dict(), path, _use_new_zipfile_serialization=False)

    assert detect_format(path) == "state_dict"
    assert load_digits_model(path).spec.format == "state_dict"


def test_torchvision_resnet18_state_dict_loads_for_cifar_shape(tmp_path: Path) -> None:
    net = build_architecture("torchvision:resnet18", input_shape=(3, 32, 32), num_classes=10)
    torch.save(net.state_dict(), tmp_path / "resnet.pt")

    model = load_model(
        tmp_path / "resnet.pt",
        input_shape=(3, 32, 32),
        num_classes=10,
        mean=[0.49, 0.48, 0.45],
        std=[0.25, 0.24, 0.26],
        architecture="torchvision:resnet18",
    )

    assert model.spec.architecture == "torchvision:resnet18"


# --- format detection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "misleading_name"),
    [
        ("torchscript", "model.safetensors"),
        ("state_dict", "model.safetensors"),
        ("safetensors", "model.pt"),
    ],
)
def test_detect_format_reads_bytes_not_extension(
    format: str, misleading_name: str, digits_cnn: nn.Module, tmp_path: Path
) -> None:
    write_original(digits_cnn, tmp_path / misleading_name, format)

    assert detect_format(tmp_path / misleading_name) == format
    assert load_digits_model(tmp_path / misleading_name).spec.format == format


def test_declared_format_must_match_the_bytes(digits_cnn: nn.Module, tmp_path: Path) -> None:
    torch.save(digits_cnn.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="state_dict file, not torchscript"):
        load_digits_model(tmp_path / "model.pt", format="torchscript")


def test_torch_export_pt2_archive_is_refused(tmp_path: Path) -> None:
    exported = torch.export.export(nn.Linear(4, 3), (torch.zeros(2, 4),))
    torch.export.save(exported, tmp_path / "model.pt2")

    with pytest.raises(ModelLoadError, match=r"\.pt2.*unsafe unpickling"):
        detect_format(tmp_path / "model.pt2")


def test_zip_that_torch_did_not_write_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as archive:
        archive.writestr("photos/cat.jpg", b"meow")
    with pytest.raises(ModelLoadError, match="not one written by torch"):
        detect_format(tmp_path / "model.pt")


# --- copies ----------------------------------------------------------------------------------


def test_deepcopy_of_torchscript_model_trains_independently(
    digits_cnn: nn.Module, pixels: torch.Tensor, tmp_path: Path
) -> None:
    torch.jit.save(torch.jit.script(digits_cnn), str(tmp_path / "model.ts"))
    original = load_model(tmp_path / "model.ts", input_shape=DIGITS_SHAPE, num_classes=10)
    with torch.no_grad():
        before = original(pixels)

    trained = copy.deepcopy(original)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.5)
    loss = nn.functional.cross_entropy(trained(pixels), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()

    assert isinstance(trained.net, torch.jit.ScriptModule)
    assert all(param.grad is None for param in original.parameters())
    with torch.no_grad():
        assert not torch.allclose(trained(pixels), before)
        assert torch.equal(original(pixels), before)


def test_deepcopy_keeps_frozen_parameters_frozen(digits_cnn: nn.Module, tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(digits_cnn), str(tmp_path / "model.ts"))
    original = load_model(tmp_path / "model.ts", input_shape=DIGITS_SHAPE, num_classes=10)
    first_weight = next(original.parameters())
    first_weight.requires_grad_(False)

    copied = copy.deepcopy(original)

    flags = [param.requires_grad for param in copied.parameters()]
    assert flags == [param.requires_grad for param in original.parameters()]
    assert flags[0] is False and all(flags[1:])
    assert all(param.is_leaf for param in copied.parameters())


def test_whole_module_pickle_is_refused_with_advice(digits_cnn: nn.Module, tmp_path: Path) -> None:
    torch.save(digits_cnn, tmp_path / "model.pt")  # the common mistake: not .state_dict()

    with pytest.raises(ModelLoadError, match=r"asks for torch\.nn.*model\.state_dict\(\)"):
        load_digits_model(tmp_path / "model.pt")
