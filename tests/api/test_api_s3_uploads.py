"""Refused uploads leave nothing in a real S3 store (SeaweedFS): no object under the
deployment's prefix, no multipart upload still pending (whose parts S3 would keep), no row.
The bodies are larger than one part, so each refusal comes after a multipart upload began:
cut off while streaming (aborted) or refused by the check once whole (deleted)."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from http_checks import DIGITS_FIELDS, assert_error, row_count, upload_model
from seaweed import S3Artifacts

from api.app import create_app
from core.service import auth
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.sandbox.validation import FileChecker
from core.service.storage.s3 import PART_BYTES, S3ArtifactStore
from core.service.tables import Dataset, Model

MIB = 1024 * 1024
# More than the store's first part: a multipart upload has begun before anything is refused.
BODY_BYTES = PART_BYTES + 2 * MIB


@pytest.fixture()
def s3_app(
    embedded_settings: Settings,
    s3_artifacts: S3Artifacts,
    file_checkers: Callable[[Settings], FileChecker],
) -> Iterator[Callable[..., TestClient]]:
    """Apps whose artifacts are in the bucket, with some settings changed."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            settings = s3_artifacts.settings(embedded_settings).model_copy(update=overrides)
            app = create_app(settings, file_checker=file_checkers(settings))
            client = stack.enter_context(TestClient(app))
            assert isinstance(context_of(client).store, S3ArtifactStore)
            return client

        yield make


def context_of(client: TestClient) -> ServiceContext:
    context: ServiceContext = client.app.state.context  # type: ignore[attr-defined]
    return context


def headers_for(client: TestClient) -> dict[str, str]:
    with transaction(context_of(client).sessions) as session:
        key = auth.create_key(session, owner_name="alice").key
    return {"Authorization": f"Bearer {key}"}


def assert_nothing_left(client: TestClient, artifacts: S3Artifacts) -> None:
    assert artifacts.object_keys() == []
    assert artifacts.pending_uploads() == []
    assert row_count(context_of(client), Model) == 0
    assert row_count(context_of(client), Dataset) == 0


def test_an_accepted_upload_is_one_object_in_the_bucket(
    s3_app: Callable[..., TestClient], s3_artifacts: S3Artifacts, model_files: dict[str, Path]
):
    client = s3_app()
    response = upload_model(client, headers_for(client), model_files["state_dict"])
    assert response.status_code == 201, response.text
    assert s3_artifacts.object_keys() == [f"models/{response.json()['id']}/model"]
    assert s3_artifacts.pending_uploads() == []


def model_form(boundary: str, data: bytes, *, closed: bool = True) -> Iterator[bytes]:
    """A model upload's multipart body, in 1 MiB pieces; without its closing boundary unless
    `closed`."""
    for name, value in {"name": "digits", **DIGITS_FIELDS}.items():
        disposition = f'Content-Disposition: form-data; name="{name}"'
        yield f"--{boundary}\r\n{disposition}\r\n\r\n{value}\r\n".encode()
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.pt"\r\n\r\n'
    ).encode()
    for at in range(0, len(data), MIB):
        yield data[at : at + MIB]
    if closed:
        yield f"\r\n--{boundary}--\r\n".encode()


def post_form(client: TestClient, boundary: str, body: Iterator[bytes]) -> httpx.Response:
    """POST /v1/models with `body` handed to the app piece by piece as it comes, with no
    Content-Length (httpx's ASGI transport; the TestClient would read the body whole first)."""
    headers = {
        **headers_for(client),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }

    async def pieces() -> AsyncIterator[bytes]:
        for piece in body:
            yield piece

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.post("/v1/models", headers=headers, content=pieces())

    return asyncio.run(post())


def test_an_oversized_model_is_cut_off_and_its_multipart_upload_aborted(
    s3_app: Callable[..., TestClient], s3_artifacts: S3Artifacts
):
    # No Content-Length to refuse it by: the limit is met mid-stream, a part already sent.
    client = s3_app(max_model_bytes=PART_BYTES + MIB)
    response = post_form(client, "b", model_form("b", os.urandom(BODY_BYTES)))
    assert assert_error(response, 413, "too_large")["field"] == "file"
    assert_nothing_left(client, s3_artifacts)


def test_a_model_refused_by_its_check_is_deleted_from_the_bucket(
    s3_app: Callable[..., TestClient], s3_artifacts: S3Artifacts, tmp_path: Path
):
    client = s3_app()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(BODY_BYTES))
    error = assert_error(upload_model(client, headers_for(client), junk), 422, "invalid_model")
    assert "not a TorchScript archive, state_dict or safetensors" in error["message"]
    assert_nothing_left(client, s3_artifacts)


def test_a_form_that_ends_before_its_last_boundary_leaves_no_part(
    s3_app: Callable[..., TestClient], s3_artifacts: S3Artifacts
):
    client = s3_app()
    body = model_form("b", os.urandom(BODY_BYTES), closed=False)
    assert_error(post_form(client, "b", body), 400, "malformed_multipart")
    assert_nothing_left(client, s3_artifacts)


def test_a_dataset_refused_by_its_check_is_deleted_from_the_bucket(
    s3_app: Callable[..., TestClient], s3_artifacts: S3Artifacts
):
    client = s3_app()
    buffer = io.BytesIO()
    images = BODY_BYTES // (4 * 32 * 32) + 1
    np.savez(buffer, x=np.zeros((images, 1, 32, 32), dtype=np.float32))  # and no labels
    assert len(buffer.getvalue()) > PART_BYTES
    response = client.post(
        "/v1/datasets",
        headers=headers_for(client),
        files={"file": ("d.npz", buffer.getvalue())},
    )
    assert_error(response, 422, "invalid_dataset")
    assert_nothing_left(client, s3_artifacts)
