"""The one JSON error shape, `{"error": {"code", "message", "field"}}`, answered for every error:
domain errors by core.service.errors' table (status and code), FastAPI's own request validation,
routing's 404/405, and (as a last resort) unexpected exceptions, each as an `ApiError`'s response.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Mount
from starlette.types import Scope

from api.openapi_errors import document_error_responses
from core.service.errors import (
    JobCode,
    LimitReached,
    RobustError,
    ServiceError,
    error_body,
    status_and_code,
)

log = logging.getLogger(__name__)

HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")

# Codes for errors raised by routing and Starlette itself (HTTPException by status).
HTTP_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_request",
    429: "too_many_requests",
    507: "storage_full",
}


class ApiError(Exception):
    """An error answer: one the HTTP layer raises itself (a bad Range, too many uploads at once),
    or the answer the handlers below make of any other error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = {"error": {**error_body(self.code, self.message), "field": self.field}}
        return JSONResponse(body, status_code=self.status, headers=self.headers or None)


def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    status, code = status_and_code(exc)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    field = getattr(exc, "field", None)  # the service's and the engine's errors both carry one
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, LimitReached):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    return ApiError(status, code, message, field=field, headers=headers).response()


def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


def _dotted(location: Sequence[int | str]) -> str:
    """("body", "hyperparameters", "epochs") -> "hyperparameters.epochs"; list items as [i]."""
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: Mapping[str, Any]) -> str:
    field = _dotted(error.get("loc", ()))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    given = error.get("input")
    if error.get("type") != "missing" and isinstance(given, int | float | str | bool):
        shown = repr(given) if len(repr(given)) <= 60 else repr(given)[:57] + "..."
        message += f", got {shown}"
    return f"{field}: {message}" if field else message


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not errors:
        return ApiError(422, "invalid_request", "the request is not valid").response()
    first = errors[0]
    code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_request"
    field = None if code == "invalid_json" else (_dotted(first.get("loc", ())) or None)
    message = "; ".join(_describe(error) for error in errors[:5])
    if len(errors) > 5:
        message += f" (and {len(errors) - 5} more)"
    return ApiError(422, code, message, field=field).response()


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        # Routing names only the first route that matched the path; a path may have several.
        allowed = allowed_methods(request.app, request.scope)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return ApiError(exc.status_code, code, message, headers=headers).response()


def allowed_methods(app: Starlette, scope: Scope) -> list[str]:
    """Every method some route of `app` answers on the scope's path."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Mount):
            # A mount matches every method; its one app here (the static files) only reads.
            if route.matches(scope)[0] is not Match.NONE:
                methods |= {"GET", "HEAD"}
            continue
        for method in HTTP_METHODS:
            if route.matches({**scope, "method": method})[0] is Match.FULL:
                methods.add(method)
    return sorted(methods)


def _client_disconnect(_request: Request, _exc: Exception) -> JSONResponse:
    # Nobody is left to read this; it only keeps a dropped upload from being logged as a crash.
    return ApiError(400, "client_disconnected", "the client went away mid-request").response()


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    message = "an internal error occurred; it has been logged"
    return ApiError(500, JobCode.INTERNAL_ERROR, message).response()


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the one shape, and document the statuses in the schema."""
    document_error_responses(app)  # api.openapi_errors
    app.add_exception_handler(ServiceError, _domain_error)
    app.add_exception_handler(RobustError, _domain_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected)
