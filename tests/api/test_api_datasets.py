"""Dataset uploads (.npz and ImageFolder archives), the builtins, listing and showing."""

from __future__ import annotations

import io
import tarfile
from typing import Any

from fastapi.testclient import TestClient
from http_checks import assert_error, job_body, npz_bytes, stored_files
from PIL import Image

from core.robust.datasets.loading import BUILTIN_DATASETS, DatasetSplits
from core.service.context import ServiceContext


def test_npz_upload_records_shapes_and_sizes(
    client: TestClient, headers: dict[str, str], context: ServiceContext, digits: DatasetSplits
):
    response = client.post(
        "/v1/datasets",
        headers=headers,
        files={"file": ("digits.npz", npz_bytes(digits))},
        data={"name": "my digits"},
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["id"].startswith("ds_")
    assert dataset["name"] == "my digits"
    assert dataset["builtin"] is False and dataset["kind"] == "npz"
    assert dataset["input_shape"] == [1, 8, 8] and dataset["num_classes"] == 10
    assert (dataset["train_size"], dataset["test_size"]) == (len(digits.train), len(digits.test))
    # The stored file keeps its extension: the engine picks its reader by it.
    assert [path.name for path in stored_files(context)] == ["data.npz"]
    shown = client.get(f"/v1/datasets/{dataset['id']}", headers=headers).json()
    assert shown == dataset


def test_imagefolder_tar_gz_upload(
    client: TestClient, headers: dict[str, str], context: ServiceContext
):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for label, shade in (("dark", 10), ("light", 240)):
            for index in range(5):
                image = io.BytesIO()
                Image.new("L", (6, 6), color=shade).save(image, format="PNG")
                info = tarfile.TarInfo(f"{label}/{index}.png")
                info.size = len(image.getvalue())
                archive.addfile(info, io.BytesIO(image.getvalue()))
    response = client.post(
        "/v1/datasets", headers=headers, files={"file": ("nuancés.tar.gz", buffer.getvalue())}
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["kind"] == "imagefolder"
    assert dataset["input_shape"] == [1, 6, 6] and dataset["num_classes"] == 2
    assert dataset["train_size"] + dataset["test_size"] == 10
    assert dataset["name"] == dataset["file_name"] == "nuancés.tar.gz"
    assert [path.name for path in stored_files(context)] == ["data.tar.gz"]


def test_list_shows_builtins_then_uploads_across_pages(
    client: TestClient, headers: dict[str, str], digits: DatasetSplits
):
    uploaded = client.post(
        "/v1/datasets", headers=headers, files={"file": ("d.npz", npz_bytes(digits))}
    ).json()
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/datasets", headers=headers, params=params).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["id"] for item in seen] == [*BUILTIN_DATASETS, uploaded["id"]]
    assert all(item["builtin"] for item in seen[:-1]) and not seen[-1]["builtin"]


def test_builtin_dataset_is_shown_by_name(client: TestClient, headers: dict[str, str]):
    response = client.get("/v1/datasets/builtin:digits", headers=headers)
    assert response.status_code == 200
    assert response.json()["input_shape"] == [1, 8, 8]
    assert_error(client.get("/v1/datasets/builtin:nope", headers=headers), 404, "not_found")
    assert_error(client.delete("/v1/datasets/builtin:digits", headers=headers), 409, "conflict")


def test_job_on_an_uploaded_dataset_that_fits(
    client: TestClient,
    headers: dict[str, str],
    stored_model: dict[str, Any],
    digits: DatasetSplits,
):
    fits = client.post(
        "/v1/datasets", headers=headers, files={"file": ("d.npz", npz_bytes(digits))}
    ).json()
    rgb = client.post(
        "/v1/datasets", headers=headers, files={"file": ("rgb.npz", npz_bytes(digits, channels=3))}
    ).json()
    body = job_body(stored_model["id"], dataset=fits["id"])
    assert client.post("/v1/jobs", headers=headers, json=body).status_code == 202
    body = job_body(stored_model["id"], dataset=rgb["id"])
    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)
    assert error["field"] == "dataset" and "[3, 8, 8]" in error["message"]
    # A dataset a queued job reads cannot be deleted; one no job reads can.
    assert_error(client.delete(f"/v1/datasets/{fits['id']}", headers=headers), 409)
    assert client.delete(f"/v1/datasets/{rgb['id']}", headers=headers).status_code == 204
