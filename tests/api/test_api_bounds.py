"""Every form field and dataset value is bounded before use: deep nesting, long lists, huge or
tiny numbers and out-of-range labels answer 422 naming the field, never a 500; a refused
upload leaves no file behind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from http_checks import assert_error, job_body, stored_files, upload_model

from core.robust.datasets.loading import MAX_CLASSES, DatasetSplits, load_dataset
from core.robust.errors import DatasetError
from core.service.context import ServiceContext

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_shape", "[" * 5000 + "]" * 5000),
        ("mean", "[" * 8000),
        ("std", "[[0.5]]"),
        ("mean", "[" + ",".join(["0.5"] * 5000) + "]"),
        ("input_shape", ",".join(["1"] * 6000)),
        ("mean", "[1e308]"),
        ("std", "1e-30"),
        ("input_shape", "[1, 8, 1" + "0" * 5000 + "]"),
        ("num_classes", "1" + "0" * 5000),
        ("mean", '[{"a": [[[[0.5]]]]}]'),
    ],
)
def test_unbounded_form_fields_answer_422_naming_the_field(
    client: TestClient,
    headers: dict[str, str],
    model_files: dict[str, Path],
    context: ServiceContext,
    field: str,
    value: str,
):
    response = upload_model(client, headers, model_files["state_dict"], **{field: value})
    error = assert_error(response, 422)
    assert error["field"] == field, error
    assert stored_files(context) == []


def npz_with_label(digits: DatasetSplits, label: int, *, dtype: str = "int64") -> bytes:
    x, y = digits.train.tensors(50)
    labels = y.numpy().astype(dtype)
    labels[7] = label
    buffer = io.BytesIO()
    np.savez(buffer, x=x.numpy(), y=labels)
    return buffer.getvalue()


@pytest.mark.parametrize("label", [10**12, MAX_CLASSES])
def test_a_dataset_label_past_the_class_cap_answers_422(
    client: TestClient,
    headers: dict[str, str],
    digits: DatasetSplits,
    context: ServiceContext,
    label: int,
):
    response = client.post(
        "/v1/datasets",
        headers=headers,
        files={"file": ("big-label.npz", npz_with_label(digits, label))},
    )
    error = assert_error(response, 422, "invalid_dataset")
    assert str(label) in error["message"] and str(MAX_CLASSES) in error["message"]
    assert stored_files(context) == []


def test_the_largest_allowed_label_is_accepted(tmp_path: Path, digits: DatasetSplits):
    path = tmp_path / "d.npz"
    path.write_bytes(npz_with_label(digits, MAX_CLASSES - 1))
    assert load_dataset(path).num_classes == MAX_CLASSES


@pytest.mark.parametrize(("label", "dtype"), [(-1, "int64"), (2**63 + 5, "uint64")])
def test_negative_and_wrapping_labels_are_refused_by_the_loader(
    tmp_path: Path, digits: DatasetSplits, label: int, dtype: str
):
    path = tmp_path / "d.npz"
    path.write_bytes(npz_with_label(digits, label, dtype=dtype))
    with pytest.raises(DatasetError, match=f"the label {label} "):
        load_dataset(path)


def test_deep_or_huge_job_bodies_never_get_a_server_error(
    client: TestClient, headers: dict[str, str]
):
    json_headers = {**headers, "Content-Type": "application/json"}
    deep = client.post("/v1/jobs", headers=json_headers, content=DEEP.encode())
    assert 400 <= deep.status_code < 500, deep.text
    assert_error(deep, deep.status_code)
    huge_number = b'{"kind": "harden", "model_id": "mdl_x", "dataset": "builtin:digits", "seed": 1'
    huge_number += b"0" * 5000 + b"}"
    response = client.post("/v1/jobs", headers=json_headers, content=huge_number)
    assert 400 <= response.status_code < 500, response.text
    epsilons = job_body("mdl_x", evaluation={"epsilons": [0.1] * 10_000})
    assert_error(client.post("/v1/jobs", headers=headers, json=epsilons), 422)
    deep_value = job_body("mdl_x", seed=[[[[[[[[1]]]]]]]])
    assert (
        assert_error(client.post("/v1/jobs", headers=headers, json=deep_value), 422)["field"]
        == "seed"
    )
