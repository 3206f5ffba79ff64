"""Property-based: schemathesis generates requests from the app's OpenAPI schema, valid and
invalid; none may answer 5xx, and every error answers in the error shape."""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

# Multipart uploads start a child process per case: they have their own tests.
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
    app: FastAPI, headers: dict[str, str], uploaded_model: dict[str, Any]
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
            case.body.update(model_id=uploaded_model["id"], dataset="builtin:digits")
        response = case.call(headers=headers)
        statuses.add(response.status_code)
        errors.append(response.text)
        assert_not_a_server_error(response, "POST /v1/jobs")

    check()
    assert statuses & {200, 202}, (statuses, errors[:5])
