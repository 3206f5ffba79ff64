"""Model uploads in every accepted format, download (ETag, Range, 304), list, delete."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from http_checks import assert_error, job_body, store_model, stored_files, upload_model

from core.robust.models.modelio import load_model
from core.service.context import ServiceContext


@pytest.mark.parametrize("format", ["state_dict", "torchscript", "safetensors"])
def test_upload_in_each_format_is_detected_checked_and_stored(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    model_files: dict[str, Path],
    format: str,
):
    path = model_files[format]
    fields = {"mean": "[0.5]", "std": "0.25"}
    if format == "torchscript":  # self-contained: no architecture, classes read off its output
        fields.update(architecture=None, num_classes=None)  # type: ignore[arg-type]
    response = upload_model(client, headers, path, **fields)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["id"].startswith("mdl_")
    assert model["format"] == format
    assert model["input_shape"] == [1, 8, 8]
    assert model["num_classes"] == 10
    assert model["mean"] == [0.5] and model["std"] == [0.25]
    assert model["architecture"] == (None if format == "torchscript" else "builtin:digits_cnn")
    data = path.read_bytes()
    assert model["sha256"] == hashlib.sha256(data).hexdigest()
    assert model["size_bytes"] == len(data)
    assert [p.read_bytes() for p in stored_files(context)] == [data]
    shown = client.get(f"/v1/models/{model['id']}", headers=headers)
    assert shown.status_code == 200 and shown.json() == model


def test_declared_format_must_match_the_file(
    client: TestClient, headers: dict[str, str], model_files: dict[str, Path]
):
    response = upload_model(client, headers, model_files["state_dict"], format="safetensors")
    error = assert_error(response, 422)
    assert error["field"] == "format"
    assert "state_dict" in error["message"]


def test_timm_state_dict_round_trips_through_upload_and_download(
    client: TestClient, headers: dict[str, str], tmp_path: Path
):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    # A ViT sized for 32x32 inputs, as its user built it: the service must build the same.
    net = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=32).eval()
    path = tmp_path / "vit.pt"
    torch.save(net.state_dict(), path)

    response = upload_model(
        client, headers, path, architecture="timm:test_vit", input_shape="3,32,32"
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["format"], model["architecture"]) == ("state_dict", "timm:test_vit")
    content = client.get(f"/v1/models/{model['id']}/content", headers=headers)
    assert content.status_code == 200
    (tmp_path / "downloaded.pt").write_bytes(content.content)

    again = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=32).eval()
    again.load_state_dict(torch.load(tmp_path / "downloaded.pt", weights_only=True), strict=True)
    served = load_model(
        tmp_path / "downloaded.pt",
        input_shape=(3, 32, 32),
        num_classes=10,
        architecture=model["architecture"],
    ).eval()
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(images), net(images))
        assert torch.equal(served(images), net(images))


def test_unknown_timm_architecture_is_422_naming_close_matches(
    client: TestClient, headers: dict[str, str], model_files: dict[str, Path]
):
    response = upload_model(
        client, headers, model_files["state_dict"], architecture="timm:resnet19"
    )
    error = assert_error(response, 422)
    assert error["field"] == "architecture"
    assert "unknown timm model 'resnet19'; close: " in error["message"]
    assert "resnet18" in error["message"]


def test_download_round_trip_with_etag_304_and_ranges(
    client: TestClient,
    headers: dict[str, str],
    uploaded_model: dict[str, Any],
    model_files: dict[str, Path],
):
    url = f"/v1/models/{uploaded_model['id']}/content"
    data = model_files["state_dict"].read_bytes()
    full = client.get(url, headers=headers)
    assert full.status_code == 200
    assert full.content == data
    etag = full.headers["ETag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    assert full.headers["Accept-Ranges"] == "bytes"

    not_modified = client.get(url, headers={**headers, "If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""

    part = client.get(url, headers={**headers, "Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.content == data[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(data)}"

    tail = client.get(url, headers={**headers, "Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == data[-16:]

    outside = client.get(url, headers={**headers, "Range": f"bytes={len(data) + 5}-"})
    assert_error(outside, 416, "range_not_satisfiable")
    assert outside.headers["Content-Range"] == f"bytes */{len(data)}"

    stale = client.get(url, headers={**headers, "Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == data


def test_models_list_in_pages(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    model_files: dict[str, Path],
):
    created = [
        store_model(context, headers, model_files["safetensors"], name=f"m{i}")["id"]
        for i in range(3)
    ]
    first = client.get("/v1/models", headers=headers, params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get(
        "/v1/models", headers=headers, params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert second["next_cursor"] is None
    listed = [item["id"] for item in first["items"] + second["items"]]
    assert listed == sorted(created, reverse=True)  # newest first


def test_bad_cursor_is_422_naming_cursor(client: TestClient, headers: dict[str, str]):
    response = client.get("/v1/models", headers=headers, params={"cursor": "not a cursor!"})
    assert assert_error(response, 422)["field"] == "cursor"


def test_delete_removes_row_and_file(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    uploaded_model: dict[str, Any],
):
    model_id = uploaded_model["id"]
    assert client.delete(f"/v1/models/{model_id}", headers=headers).status_code == 204
    assert_error(client.get(f"/v1/models/{model_id}", headers=headers), 404, "not_found")
    assert stored_files(context) == []


def test_delete_of_a_model_a_queued_job_uses_is_409(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    model_id = stored_model["id"]
    job = client.post("/v1/jobs", headers=headers, json=job_body(model_id)).json()
    assert_error(client.delete(f"/v1/models/{model_id}", headers=headers), 409, "conflict")
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert client.delete(f"/v1/models/{model_id}", headers=headers).status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}", headers=headers).json()["model_id"] is None
