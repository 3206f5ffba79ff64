"""The OpenAPI schema lists every status an operation answers (errors as JSON in the error
shape, whatever the operation's own answer is), and a 405's Allow header names exactly the
methods its path has."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from http_checks import assert_error, job_body, upload_model

from core.service.context import ServiceContext

OTHER_METHODS = ("PUT", "PATCH", "DELETE", "POST", "GET")


def assert_documented(app: FastAPI, method: str, path: str, response: httpx.Response) -> None:
    """`response` to `method path` (a template of the schema) is one the schema lists."""
    operation = app.openapi()["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], (method, path, status, list(operation["responses"]))
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.headers
        content = operation["responses"][status]["content"]
        assert content == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
        }


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def test_a_405_allow_header_lists_every_method_of_its_path(app: FastAPI, client: TestClient):
    paths: dict[str, Any] = app.openapi()["paths"]
    checked = 0
    for template, operations in paths.items():
        methods = {method.upper() for method in operations}
        wrong = next(method for method in OTHER_METHODS if method not in methods)
        response = client.request(wrong, concrete(template))
        assert_error(response, 405, "method_not_allowed")
        allowed = {method.strip() for method in response.headers["Allow"].split(",")}
        assert allowed == methods, (template, wrong, allowed, methods)
        checked += 1
    assert checked >= 15
    static = client.post("/static/app.js")
    assert_error(static, 405)
    assert static.headers["Allow"] == "GET, HEAD"


def test_known_error_answers_are_in_the_schema(
    app: FastAPI, client: TestClient, headers: dict[str, str], context: ServiceContext
):
    builtin = client.delete("/v1/datasets/builtin:digits", headers=headers)
    assert_error(builtin, 409, "conflict")
    assert_documented(app, "DELETE", "/v1/datasets/{dataset_id}", builtin)

    for path in ("/v1/models", "/v1/datasets"):
        not_multipart = client.post(path, headers=headers, json={"file": "x"})
        assert_error(not_multipart, 400, "not_multipart")
        assert_documented(app, "POST", path, not_multipart)

    not_text = client.post(
        "/v1/jobs",
        headers={**headers, "Content-Type": "application/json"},
        content=b'{"kind": "\xff\xfe"}',
    )
    assert_error(not_text, 400)
    assert_documented(app, "POST", "/v1/jobs", not_text)

    report = client.get("/v1/jobs/job_x/report")
    assert_error(report, 401, "unauthorized")
    assert_documented(app, "GET", "/v1/jobs/{job_id}/report", report)
    missing = client.get("/v1/jobs/job_x/report", headers=headers)
    assert_error(missing, 404)
    assert_documented(app, "GET", "/v1/jobs/{job_id}/report", missing)


def test_upload_and_download_errors_are_in_the_schema(
    app_factory: Callable[..., TestClient],
    app: FastAPI,
    client: TestClient,
    headers: dict[str, str],
    model_files: dict[str, Path],
    stored_model: dict[str, Any],
):
    small = app_factory(max_model_bytes=1000)
    too_large = upload_model(small, headers, model_files["state_dict"])
    assert_error(too_large, 413, "too_large")
    assert_documented(app, "POST", "/v1/models", too_large)

    content = f"/v1/models/{stored_model['id']}/content"
    outside = client.get(content, headers={**headers, "Range": "bytes=999999999-"})
    assert_error(outside, 416, "range_not_satisfiable")
    assert_documented(app, "GET", "/v1/models/{model_id}/content", outside)
    malformed = client.get(content, headers={**headers, "Range": "lines=1-2"})
    assert_error(malformed, 400, "invalid_range")
    assert_documented(app, "GET", "/v1/models/{model_id}/content", malformed)

    for path in ("/v1/models", "/v1/datasets"):
        statuses = set(app.openapi()["paths"][path]["post"]["responses"])
        assert statuses >= {"201", "400", "401", "413", "422", "429", "507"}, (path, statuses)


def test_an_idempotency_key_reused_with_another_body_is_a_documented_409(
    app: FastAPI, client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    keyed = {**headers, "Idempotency-Key": "retry-1"}
    first = client.post("/v1/jobs", headers=keyed, json=job_body(stored_model["id"]))
    assert first.status_code == 202, first.text
    assert_documented(app, "POST", "/v1/jobs", first)
    clash = client.post("/v1/jobs", headers=keyed, json=job_body(stored_model["id"], seed=1))
    assert_error(clash, 409, "conflict")
    assert_documented(app, "POST", "/v1/jobs", clash)


@pytest.mark.parametrize("path", ["/healthz", "/v1/models", "/v1/jobs/{job_id}/report"])
def test_every_error_response_of_an_operation_is_json(app: FastAPI, path: str):
    operation = app.openapi()["paths"][path]["get"]
    errors = {status: r for status, r in operation["responses"].items() if int(status) >= 400}
    assert errors
    for response in errors.values():
        assert list(response["content"]) == ["application/json"]
