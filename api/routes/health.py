"""Operations: liveness, readiness (database and broker reachable), Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import ContextDep, QueueDep
from api.errors import ApiError
from api.schemas import ErrorBody, HealthOut

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: the database and the broker are reachable",
    responses={503: {"model": ErrorBody, "description": "a dependency is down"}},
)
def readyz(context: ContextDep, queue: QueueDep) -> JSONResponse:
    problems = []
    try:
        with context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means the same thing: not ready
        log.warning("readyz: database unreachable: %s", exc)
        problems.append(f"database unreachable ({type(exc).__name__})")
    try:
        queue.ping()
    except Exception as exc:  # any transport error means the same thing: not ready
        log.warning("readyz: broker unreachable: %s", exc)
        problems.append(f"broker unreachable ({type(exc).__name__})")
    if problems:
        return ApiError(503, "not_ready", "; ".join(problems)).response()
    return JSONResponse({"status": "ready", "database": "ok", "broker": "ok"})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
