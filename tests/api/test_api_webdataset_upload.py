"""A WebDataset tar shard uploaded as a dataset: checked in the sandbox like an ImageFolder
archive (every sample's image and label), recorded with its shape, classes and sizes."""

from __future__ import annotations

import io

import webdataset as wds
from fastapi.testclient import TestClient
from PIL import Image


def shard_bytes(*, samples: int) -> bytes:
    buffer = io.BytesIO()
    with wds.TarWriter(buffer) as shard:
        for index in range(samples):
            image = io.BytesIO()
            Image.new("L", (6, 6), color=20 * (index % 4)).save(image, format="PNG")
            shard.write({"__key__": f"{index:06d}", "png": image.getvalue(), "cls": index % 4})
    return buffer.getvalue()


def test_webdataset_shard_upload(client: TestClient, headers: dict[str, str]):
    response = client.post(
        "/v1/datasets",
        headers=headers,
        files={"file": ("shard-000000.tar", shard_bytes(samples=20))},
    )

    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["input_shape"] == [1, 6, 6] and dataset["num_classes"] == 4
    assert (dataset["train_size"], dataset["test_size"]) == (16, 4)
