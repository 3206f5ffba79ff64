"""The error statuses each operation of the API documents in its OpenAPI schema, each in the
one error shape (api.errors answers them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

STATUS_DESCRIPTIONS = {
    400: "the request cannot be read (not multipart, a malformed form or Range, a body that "
    "is not JSON text)",
    401: "no API key, or an unknown or revoked one",
    404: "no such resource for this API key's owner",
    409: "the request clashes with the resource's state (in use, builtin, already ended, or "
    "an Idempotency-Key reused with another body)",
    413: "the upload is larger than its limit",
    416: "the range lies outside the file",
    422: "the request is not valid; `field` names what to change",
    408: "the upload stalled: no byte of it arrived for too long",
    429: "too many at once for this owner; retry after Retry-After seconds",
    503: "the service is shutting down; retry shortly",
    507: "the artifact store is full; nothing was stored",
}
_ERROR_BODY_REF = {"$ref": "#/components/schemas/ErrorBody"}


def document_error_responses(app: FastAPI) -> None:
    """Make the app's OpenAPI schema list every error status each operation can answer, each in
    the error shape as JSON (also where the operation's own answer is HTML or a file)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
                "ErrorBody", _error_body_schema(schema)
            )
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    _document_operation(method.upper(), path, operation)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    from api.schemas import ErrorBody

    definition = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in definition.pop("$defs", {}).items():
        schema["components"]["schemas"].setdefault(name, nested)
    return definition


def error_statuses(method: str, path: str, operation: Mapping[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from what it takes and does."""
    statuses: set[int] = set()
    parameters = operation.get("parameters", [])
    body = operation.get("requestBody", {}).get("content", {})
    if operation.get("security"):
        statuses.add(401)
    if "{" in path:
        statuses.add(404)
    if parameters or body:
        statuses.add(422)
    if body:
        statuses.add(400)  # a body that cannot be read at all (bad UTF-8, too deep, cut off)
    if "multipart/form-data" in body:
        # An upload: a size limit, an idle timeout, slots per owner, a checker that may be
        # shutting down, and a write into the artifact store.
        statuses |= {408, 413, 429, 503, 507}
    has_idempotency_key = any(p.get("name") == "Idempotency-Key" for p in parameters)
    changes_a_resource = method == "DELETE" or (method == "POST" and "{" in path)
    if has_idempotency_key or changes_a_resource:
        statuses.add(409)
    downloads = operation.get("responses", {}).get("200", {}).get("content", {})
    if "application/octet-stream" in downloads:
        statuses |= {400, 416}  # Range
    return statuses


def _document_operation(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status in error_statuses(method, path, operation):
        responses.setdefault(
            str(status), {"description": STATUS_DESCRIPTIONS.get(status, "an error")}
        )
    for documented, response in responses.items():
        if documented.isdigit() and int(documented) >= 400:
            response["content"] = {"application/json": {"schema": _ERROR_BODY_REF}}
