"""Deterministic artifact bytes: the same weights saved in two processes (different hash seeds,
different folders and file names) give the same file and sha256, in every format and for the
checkpoint; a saved file still loads and saves the same bytes again."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from core.robust.checkpoint import save_checkpoint
from core.robust.datasets.loading import DatasetSplits
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.models.architectures import build_architecture
from core.robust.models.modelio import load_model, model_from_module, save_model
from core.robust.threat import ThreatModel

REPO = Path(__file__).resolve().parents[2]
SHAPE = (1, 8, 8)
FORMATS = ("torchscript", "state_dict", "safetensors")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")

# One fresh interpreter saves everything from the same inputs into its own folder.
SAVE_EVERYTHING = textwrap.dedent(
    """
    import hashlib, io, sys, warnings
    from pathlib import Path
    import torch
    from core.robust.models.architectures import build_architecture
    from core.robust.checkpoint import load_checkpoint, save_checkpoint
    from core.robust.models.modelio import load_model, model_from_module, save_model

    warnings.simplefilter("ignore", FutureWarning)
    torch.set_num_threads(1)
    inputs, out = Path(sys.argv[1]), Path(sys.argv[2])
    for format in ("torchscript", "state_dict", "safetensors"):
        torch.manual_seed(123)  # other initial weights: only the loaded ones may count
        net = build_architecture("builtin:digits_cnn", input_shape=(1, 8, 8), num_classes=10)
        net.load_state_dict(torch.load(inputs / "weights.pt", weights_only=True))
        model = model_from_module(net, input_shape=(1, 8, 8), num_classes=10, format=format)
        save_model(model, out / f"{format}-{out.name}.model")
    upload = load_model(inputs / "upload.pt", input_shape=(1, 8, 8), num_classes=10)
    save_model(upload, out / "loaded_torchscript")
    save_checkpoint(load_checkpoint(inputs / "checkpoint.pt"), out / "checkpoint")
    # What plain torch.jit.script + save gives, for comparison.
    plain = io.BytesIO()
    torch.jit.save(torch.jit.script(net), plain)
    (out / "plain_torchscript").write_bytes(plain.getvalue())
    """
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inputs(folder: Path, digits: DatasetSplits) -> None:
    folder.mkdir()
    torch.manual_seed(7)
    net = build_architecture("builtin:digits_cnn", input_shape=SHAPE, num_classes=10)
    torch.save(net.state_dict(), folder / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(net), str(folder / "upload.pt"))
    checkpoints: list[dict[str, object]] = []
    adversarial_finetune(
        model_from_module(net, input_shape=SHAPE, num_classes=10),
        digits.train.subset(torch.arange(64)),
        ThreatModel(norm="linf", epsilon=0.1, steps=1),
        FinetuneConfig(epochs=1, batch_size=64, seed=0),
        on_epoch=lambda _metrics, checkpoint: checkpoints.append(checkpoint),
    )
    save_checkpoint(checkpoints[-1], folder / "checkpoint.pt")


@pytest.fixture(scope="module")
def saved_twice(
    tmp_path_factory: pytest.TempPathFactory, digits: DatasetSplits
) -> dict[str, tuple[str, str]]:
    """{artifact: (sha256 in process 1, sha256 in process 2)}, hash seeds 1 and 2."""
    root = tmp_path_factory.mktemp("deterministic")
    _inputs(root / "inputs", digits)
    for seed in (1, 2):
        out = root / f"process-{seed}"
        out.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": str(REPO)}
        subprocess.run(
            [sys.executable, "-c", SAVE_EVERYTHING, str(root / "inputs"), str(out)],
            check=True,
            cwd=REPO,
            env=env,
            timeout=300,
        )
    first, second = root / "process-1", root / "process-2"
    found = {
        format: (
            sha256(first / f"{format}-{first.name}.model"),
            sha256(second / f"{format}-{second.name}.model"),
        )
        for format in FORMATS
    }
    for name in ("loaded_torchscript", "checkpoint", "plain_torchscript"):
        found[name] = (sha256(first / name), sha256(second / name))
    found["checkpoint_source"] = (sha256(root / "inputs" / "checkpoint.pt"),) * 2
    return found


@pytest.mark.parametrize("format", FORMATS)
def test_the_same_weights_saved_in_two_processes_give_the_same_sha256(
    saved_twice: dict[str, tuple[str, str]], format: str
):
    first, second = saved_twice[format]
    assert first == second


def test_a_loaded_torchscript_model_saved_in_two_processes_gives_the_same_sha256(
    saved_twice: dict[str, tuple[str, str]],
):
    """The service's own path: a TorchScript upload, loaded, saved back (as after training)."""
    first, second = saved_twice["loaded_torchscript"]
    assert first == second


def test_the_same_checkpoint_saved_in_two_processes_gives_the_same_sha256(
    saved_twice: dict[str, tuple[str, str]],
):
    first, second = saved_twice["checkpoint"]
    assert first == second == saved_twice["checkpoint_source"][0]


def test_plain_scripting_would_differ_between_the_two_processes(
    saved_twice: dict[str, tuple[str, str]],
):
    """Why save_model sorts the scripted constants: torch.jit.script + save alone gives
    other bytes under another hash seed (a Conv2d's constants come from a set of names)."""
    first, second = saved_twice["plain_torchscript"]
    assert first != second


@pytest.mark.parametrize("format", FORMATS)
def test_a_saved_model_loads_and_saves_the_same_bytes_again(tmp_path: Path, format: str):
    torch.manual_seed(7)
    net = build_architecture("builtin:digits_cnn", input_shape=SHAPE, num_classes=10).eval()
    model = model_from_module(
        net,
        input_shape=SHAPE,
        num_classes=10,
        architecture="builtin:digits_cnn",
        format=format,  # type: ignore[arg-type]
    )
    first = tmp_path / "first"
    save_model(model, first)
    if format == "state_dict":
        with first.open("rb") as handle:
            assert set(torch.load(handle, weights_only=True)) == set(net.state_dict())
    if format == "torchscript":
        assert isinstance(torch.jit.load(str(first)), torch.jit.ScriptModule)
    loaded = load_model(first, input_shape=SHAPE, num_classes=10, architecture="builtin:digits_cnn")
    pixels = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.net(pixels), net(pixels))
    # An optimizer holding the parameters must not change the bytes (TorchScript's pickler
    # would otherwise memoize the shared tensors).
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.1)
    second = tmp_path / "second"
    save_model(loaded, second)
    assert optimizer.param_groups and sha256(second) == sha256(first)
