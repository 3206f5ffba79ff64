"""Bad uploads answer 4xx in the error shape and leave no row and no file behind."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from http_checks import DIGITS_FIELDS, assert_error, row_count, scripted, stored_files, upload_model
from PIL import Image
from torch import nn

from core.service.context import ServiceContext
from core.service.tables import Dataset, Model


def assert_nothing_left(context: ServiceContext) -> None:
    assert stored_files(context) == []
    assert row_count(context, Model) == 0
    assert row_count(context, Dataset) == 0


class OpensAFile:
    """Unpickling this calls open(marker, "w"): proof that code in a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickle_with_a_code_payload_is_refused_and_never_run(
    client: TestClient, headers: dict[str, str], context: ServiceContext, tmp_path: Path
):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": OpensAFile(marker)}, evil)
    error = assert_error(upload_model(client, headers, evil), 422, "invalid_model")
    assert error["message"].startswith("refused: the file's pickle needs")
    assert error["field"] == "file"
    assert not marker.exists()
    assert_nothing_left(context)


def test_random_bytes_are_refused(
    client: TestClient, headers: dict[str, str], context: ServiceContext, tmp_path: Path
):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    error = assert_error(upload_model(client, headers, junk), 422, "invalid_model")
    assert "not a TorchScript archive, state_dict or safetensors" in error["message"]
    assert_nothing_left(context)


def test_model_that_does_not_fit_its_declared_input_shape_is_refused(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    model_files: dict[str, Path],
):
    response = upload_model(client, headers, model_files["torchscript"], input_shape="[1,16,16]")
    error = assert_error(response, 422, "invalid_model")
    assert "forward pass on input [2, 1, 16, 16]" in error["message"]
    assert_nothing_left(context)


def test_weights_that_do_not_fit_the_architecture_are_refused(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    model_files: dict[str, Path],
):
    response = upload_model(client, headers, model_files["state_dict"], num_classes="7")
    error = assert_error(response, 422, "invalid_model")
    assert "do not fit" in error["message"]
    assert_nothing_left(context)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"input_shape": None}, "input_shape"),
        ({"input_shape": "1,8"}, "input_shape"),
        ({"input_shape": "[1, eight, 8]"}, "input_shape"),
        ({"num_classes": "0"}, "num_classes"),
        ({"mean": "[0.5, 0.5]"}, "mean"),
        ({"std": "0"}, "std"),
        ({"format": "pickle"}, "format"),
        ({"architecture": None}, "architecture"),
    ],
)
def test_bad_form_fields_name_the_field(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    model_files: dict[str, Path],
    fields: dict[str, str],
    field: str,
):
    error = assert_error(upload_model(client, headers, model_files["state_dict"], **fields), 422)
    assert error["field"] == field
    assert_nothing_left(context)


def test_upload_without_a_file_part_is_422(client: TestClient, headers: dict[str, str]):
    response = client.post("/v1/models", headers=headers, files={"other": ("a", b"x")})
    assert assert_error(response, 422)["field"] == "other"
    response = client.post("/v1/models", headers=headers, data=DIGITS_FIELDS, files={})
    assert_error(response, 400, "not_multipart")


def test_oversized_upload_is_413(
    app_factory: Callable[..., TestClient], headers: dict[str, str], model_files: dict[str, Path]
):
    small = app_factory(max_model_bytes=1000)
    context: ServiceContext = small.app.state.context  # type: ignore[attr-defined]
    error = assert_error(upload_model(small, headers, model_files["state_dict"]), 413, "too_large")
    assert error["field"] == "file"
    assert_nothing_left(context)


def multipart_chunks(
    boundary: str, data: bytes, chunk_bytes: int, sent: list[int]
) -> AsyncIterator[bytes]:
    """A multipart body as many small chunks; counts the file chunks it hands out."""

    async def body() -> AsyncIterator[bytes]:
        for name, value in DIGITS_FIELDS.items():
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.pt"\r\n\r\n'
        ).encode()
        for start in range(0, len(data), chunk_bytes):
            sent.append(start)
            yield data[start : start + chunk_bytes]
        yield f"\r\n--{boundary}--\r\n".encode()

    return body()


def test_oversized_chunked_upload_without_content_length_is_cut_off(
    app_factory: Callable[..., TestClient], headers: dict[str, str]
):
    small = app_factory(max_model_bytes=64 * 1024)
    app: FastAPI = small.app  # type: ignore[assignment]
    context: ServiceContext = app.state.context
    sent: list[int] = []
    boundary = "robustify-test-boundary"
    body = multipart_chunks(boundary, os.urandom(4 * 1024 * 1024), 8 * 1024, sent)

    async def post() -> httpx.Response:
        # httpx's ASGI transport hands the app each chunk as it comes, with no Content-Length.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.post(
                "/v1/models",
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                content=body,
            )

    response = asyncio.run(post())
    assert_error(response, 413, "too_large")
    assert len(sent) < 32  # stopped reading just past the limit, not after 4 MiB
    assert_nothing_left(context)


def zip_with_traversal() -> bytes:
    image = io.BytesIO()
    Image.new("L", (8, 8)).save(image, format="PNG")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(3):
            archive.writestr(f"zero/{index}.png", image.getvalue())
            archive.writestr(f"one/{index}.png", image.getvalue())
        archive.writestr("../escaped.png", image.getvalue())
    return buffer.getvalue()


def test_dataset_archive_with_a_parent_entry_is_refused(
    client: TestClient, headers: dict[str, str], context: ServiceContext
):
    response = client.post(
        "/v1/datasets",
        headers=headers,
        files={"file": ("evil.zip", zip_with_traversal())},
        data={"name": "evil"},
    )
    error = assert_error(response, 422, "unsafe_archive")
    assert ".." in error["message"]
    assert_nothing_left(context)


def test_dataset_with_an_unknown_extension_is_refused(
    client: TestClient, headers: dict[str, str], context: ServiceContext
):
    response = client.post("/v1/datasets", headers=headers, files={"file": ("d.csv", b"1,2\n")})
    assert assert_error(response, 422)["field"] == "file"
    assert_nothing_left(context)


def test_dataset_npz_without_labels_is_refused(
    client: TestClient, headers: dict[str, str], context: ServiceContext
):
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((10, 1, 8, 8), dtype=np.float32))
    response = client.post(
        "/v1/datasets", headers=headers, files={"file": ("d.npz", buffer.getvalue())}
    )
    assert_error(response, 422, "invalid_dataset")
    assert_nothing_left(context)


class SlowForward(nn.Module):
    """A forward pass that runs for minutes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for _ in range(100_000_000):
            y = y + 0.0
        return y.flatten(1)[:, :10]


class HungryForward(nn.Module):
    """A forward pass that asks for 1 GiB: fine for a machine, not for a 256 MiB limit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(268_435_456)  # 2**28 float32 values
        return x.flatten(1)[:, :10] + big[-1]


def test_model_check_that_runs_too_long_is_stopped(
    app_factory: Callable[..., TestClient], headers: dict[str, str], tmp_path: Path
):
    client = app_factory(validation_timeout_seconds=2.0)
    context: ServiceContext = client.app.state.context  # type: ignore[attr-defined]
    path = scripted(SlowForward(), tmp_path)
    response = upload_model(client, headers, path, architecture=None)  # type: ignore[arg-type]
    assert "2 seconds" in assert_error(response, 422, "validation_timeout")["message"]
    assert_nothing_left(context)


def test_model_check_that_needs_too_much_memory_is_refused(
    app_factory: Callable[..., TestClient], headers: dict[str, str], tmp_path: Path
):
    path = scripted(HungryForward(), tmp_path)
    roomy = app_factory()
    assert upload_model(roomy, headers, path, architecture=None).status_code == 201  # type: ignore[arg-type]
    tight = app_factory(validation_memory_bytes=256 * 1024**2)
    context: ServiceContext = tight.app.state.context  # type: ignore[attr-defined]
    response = upload_model(tight, headers, path, architecture=None)  # type: ignore[arg-type]
    assert "allocate" in assert_error(response, 422, "invalid_model")["message"]
    # Both apps share one database and store: only the roomy app's model is there.
    assert row_count(context, Model) == 1
    assert len(stored_files(context)) == 1
