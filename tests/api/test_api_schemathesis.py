"""Property-based: schemathesis generates requests from the app's OpenAPI schema, valid and
invalid; none may answer 5xx, and every error answers in the error shape."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from http_checks import DIGITS_FIELDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.robust.datasets.loading import DatasetSplits

# Multipart uploads start a child process per case: a bounded run of their own, below.
UPLOADS = r"^/v1/(models|datasets)$"
BOUNDED = settings(
    deadline=None, database=None, suppress_health_check=list(HealthCheck), max_examples=120
)


def assert_not_a_server_error(response: Any, label: str) -> None:
    assert response.status_code < 500, (label, response.status_code, response.text)
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"code", "message", "field"}, response.text


def test_generated_requests_never_get_a_server_error(app: FastAPI, headers: dict[str, str]):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(
        method="POST", path_regex=UPLOADS
    )
    strategy = schema.as_strategy(GenerationMode.POSITIVE, headers=headers) | schema.as_strategy(
        GenerationMode.NEGATIVE, headers=headers
    )
    seen: set[str] = set()

    @given(case=strategy)
    @BOUNDED
    def check(case: Any) -> None:
        seen.add(case.operation.label)
        assert_not_a_server_error(case.call(headers=headers), case.operation.label)

    check()
    assert len(seen) >= 10, seen


def test_generated_jobs_for_a_real_model_never_get_a_server_error(
    app: FastAPI, headers: dict[str, str], stored_model: dict[str, Any]
):
    """Valid bodies pointed at a real model reach the deep end: normalization, the engine's
    own checks, the insert, the enqueue."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(
        method="POST", path="/v1/jobs"
    )
    statuses: set[int] = set()
    errors: list[str] = []

    @given(case=schema.as_strategy(GenerationMode.POSITIVE, headers=headers))
    @settings(BOUNDED, max_examples=60)
    def check(case: Any) -> None:
        if isinstance(case.body, dict):
            case.body.update(model_id=stored_model["id"], dataset="builtin:digits")
        response = case.call(headers=headers)
        statuses.add(response.status_code)
        errors.append(response.text)
        assert_not_a_server_error(response, "POST /v1/jobs")

    check()
    assert statuses & {200, 202}, (statuses, errors[:5])


# Each upload case streams a file and checks it in a child process: a few dozen, time-bound.
UPLOAD_EXAMPLES = 24
UPLOAD_SECONDS = 60.0
UPLOAD_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def valid_upload_fields(path: str, model_files: dict[str, Path], digits: DatasetSplits) -> dict:
    """A real file and the fields it needs; the generated ones are laid over only some."""
    if path == "/v1/models":
        return {**DIGITS_FIELDS, "file": model_files["state_dict"].read_bytes()}
    # An ImageFolder zip: the part's generated file name ends in .zip for a zip's bytes.
    x, y = digits.train.tensors(40)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (image, label) in enumerate(zip(x, y, strict=True)):
            png = io.BytesIO()
            Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).save(png, "PNG")
            archive.writestr(f"digit-{int(label)}/{index}.png", png.getvalue())
    return {"file": buffer.getvalue()}


@pytest.mark.parametrize("path", ["/v1/models", "/v1/datasets"])
def test_generated_uploads_never_get_a_server_error_and_conform_to_the_schema(
    app: FastAPI,
    headers: dict[str, str],
    model_files: dict[str, Path],
    digits: DatasetSplits,
    path: str,
):
    """Generated forms, valid and not, half of them around a real file so that the checks in
    the child process (and the 201) are reached too."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(method="POST", path=path)
    strategy = schema.as_strategy(GenerationMode.POSITIVE, headers=headers) | schema.as_strategy(
        GenerationMode.NEGATIVE, headers=headers
    )
    valid = valid_upload_fields(path, model_files, digits)
    statuses: set[int] = set()
    stop_at = time.monotonic() + UPLOAD_SECONDS

    @given(case=strategy, around_a_real_file=st.booleans())
    @settings(BOUNDED, max_examples=UPLOAD_EXAMPLES)
    def check(case: Any, around_a_real_file: bool) -> None:
        if time.monotonic() > stop_at:
            return  # the time bound: the remaining examples are not sent
        if around_a_real_file and isinstance(case.body, dict):
            generated = {k: v for k, v in case.body.items() if k in ("name", "format")}
            case.body = {**valid, **generated}
        # A check in a child process on a busy machine may take a while: no read timeout.
        response = case.call(headers=headers, timeout=UPLOAD_SECONDS)
        statuses.add(response.status_code)
        assert_not_a_server_error(response, f"POST {path}")
        case.validate_response(response, checks=UPLOAD_CHECKS, headers=headers)

    check()
    assert statuses and all(400 <= status < 500 or status == 201 for status in statuses)
