"""Downloads streamed from the artifact store answer as a static file server would: several
ranges as multipart/byteranges, If-Range by ETag or Last-Modified, the file's name in the
Content-Disposition, 404 once the store no longer holds the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from http_checks import assert_error

from core.service import catalog
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.tables import Model


def content_url(model: dict[str, Any]) -> str:
    return f"/v1/models/{model['id']}/content"


def test_several_ranges_come_back_as_multipart_byteranges(
    client: TestClient,
    headers: dict[str, str],
    stored_model: dict[str, Any],
    model_files: dict[str, Path],
):
    data = model_files["state_dict"].read_bytes()

    response = client.get(
        content_url(stored_model), headers={**headers, "Range": "bytes=0-9, 100-119"}
    )

    assert response.status_code == 206
    media_type, _, boundary = response.headers["Content-Type"].partition("; boundary=")
    assert media_type == "multipart/byteranges"
    assert int(response.headers["Content-Length"]) == len(response.content)
    parts = response.content.split(f"--{boundary}".encode())
    assert parts[0] == b"" and parts[-1] == b"--"
    heads_and_bodies = [part.split(b"\r\n\r\n", 1) for part in parts[1:-1]]
    assert [body for _head, body in heads_and_bodies] == [
        data[0:10] + b"\r\n",
        data[100:120] + b"\r\n",
    ]
    assert f"Content-Range: bytes 100-119/{len(data)}".encode() in heads_and_bodies[1][0]


def test_if_range_serves_the_range_only_for_the_current_version(
    client: TestClient,
    headers: dict[str, str],
    stored_model: dict[str, Any],
    model_files: dict[str, Path],
):
    data = model_files["state_dict"].read_bytes()
    full = client.get(content_url(stored_model), headers=headers)

    for validator in (full.headers["ETag"], full.headers["Last-Modified"]):
        part = client.get(
            content_url(stored_model),
            headers={**headers, "Range": "bytes=5-9", "If-Range": validator},
        )
        assert part.status_code == 206 and part.content == data[5:10]
    stale = client.get(
        content_url(stored_model),
        headers={**headers, "Range": "bytes=5-9", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"},
    )
    assert stale.status_code == 200 and stale.content == data


def test_the_download_is_named_after_the_model(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    with transaction(context.sessions) as session:
        row = session.get(Model, stored_model["id"])
        assert row is not None
        row.name = "réseau"

    response = client.get(content_url(stored_model), headers=headers)

    assert response.headers["Content-Disposition"] == "attachment; filename*=utf-8''r%C3%A9seau.pt"
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_a_file_gone_from_the_store_is_404(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    context.store.delete(catalog.model_key(stored_model["id"]))

    assert_error(client.get(content_url(stored_model), headers=headers), 404, "not_found")
