"""TorchScript uploads that reach for files are refused before any of their code runs, by an
op check that names the op; a host without a sandbox refuses TorchScript unless allowed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from http_checks import assert_error, row_count, scripted, stored_files, upload_model
from torch import nn

from core.service.context import ServiceContext
from core.service.tables import Model


class WritesAFile(nn.Module):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The result is used: TorchScript drops a call whose result is not.
        written = torch.from_file(self.marker, shared=True, size=16, dtype=torch.uint8).fill_(66)
        return self.linear(x.flatten(1)) + written[0].float() * 0


class ReadsASecretOnBigBatches(nn.Module):
    """Behaves on the upload check's small batches; reads a file on training's batches."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        if x.size(0) >= 16:
            leaked = torch.from_file(self.secret, size=1, dtype=torch.uint8)
            logits = logits + leaked.float().sum()
        return logits


class SavesInASubmodule(nn.Module):
    class Saver(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.save(x, "/tmp/robustify-stolen.pt")
            return x

    def __init__(self) -> None:
        super().__init__()
        self.saver = self.Saver()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    @torch.jit.export
    def export_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.saver(x)


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "marker.bin"
    path.write_bytes(b"A" * 16)
    return path


def test_model_that_writes_a_file_is_refused_naming_the_op(
    client: TestClient, headers: dict[str, str], context: ServiceContext, marker: Path
):
    before = marker.stat().st_mtime_ns
    path = scripted(WritesAFile(str(marker)), marker.parent)
    response = upload_model(client, headers, path, architecture=None)  # type: ignore[arg-type]
    message = assert_error(response, 422, "invalid_model")["message"]
    assert "aten::from_file" in message
    assert marker.read_bytes() == b"A" * 16 and marker.stat().st_mtime_ns == before
    assert row_count(context, Model) == 0 and stored_files(context) == []


def test_model_that_reads_only_on_big_batches_is_refused_and_leaks_nothing(
    client: TestClient, headers: dict[str, str], context: ServiceContext, tmp_path: Path
):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"\x7fSECRET")
    path = scripted(ReadsASecretOnBigBatches(str(secret)), tmp_path)
    response = upload_model(client, headers, path, architecture=None)  # type: ignore[arg-type]
    assert "aten::from_file" in assert_error(response, 422, "invalid_model")["message"]
    assert "SECRET" not in response.text and "127" not in response.text
    assert row_count(context, Model) == 0


def test_file_op_in_an_exported_method_of_a_submodule_is_found(
    client: TestClient, headers: dict[str, str], tmp_path: Path
):
    path = scripted(SavesInASubmodule(), tmp_path)
    response = upload_model(client, headers, path, architecture=None)  # type: ignore[arg-type]
    message = assert_error(response, 422, "invalid_model")["message"]
    assert "aten::save" in message and "export_features" in message
    assert not Path("/tmp/robustify-stolen.pt").exists()


def test_plain_torchscript_model_is_accepted(
    client: TestClient, headers: dict[str, str], tmp_path: Path
):
    path = scripted(Plain(), tmp_path)
    response = upload_model(client, headers, path, architecture=None)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    assert response.json()["num_classes"] == 10


def test_without_a_sandbox_torchscript_is_refused_unless_allowed(
    app_factory: Callable[..., TestClient],
    headers: dict[str, str],
    tmp_path: Path,
    model_files: dict[str, Path],
):
    unsandboxed = app_factory(sandbox="none")
    path = scripted(Plain(), tmp_path)
    response = upload_model(unsandboxed, headers, path, architecture=None)  # type: ignore[arg-type]
    assert "no sandbox" in assert_error(response, 422, "invalid_model")["message"]
    # Weights are data, not programs: still accepted, checked in a plain limited child.
    assert upload_model(unsandboxed, headers, model_files["state_dict"]).status_code == 201
    allowed = app_factory(sandbox="none", allow_unsandboxed_torchscript=True)
    response = upload_model(allowed, headers, path, architecture=None)  # type: ignore[arg-type]
    assert response.status_code == 201, response.text


class ClaimsHugeOutput(nn.Module):
    """Its logits say 2**40 classes: the checker's answer is checked, not trusted."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1].expand(x.size(0), 1099511627776)


def test_model_claiming_more_classes_than_allowed_is_refused(
    client: TestClient, headers: dict[str, str], context: ServiceContext, tmp_path: Path
):
    path = scripted(ClaimsHugeOutput(), tmp_path)
    response = upload_model(client, headers, path, architecture=None, num_classes=None)  # type: ignore[arg-type]
    assert "num_classes" in assert_error(response, 422, "invalid_model")["message"]
    assert row_count(context, Model) == 0 and stored_files(context) == []
