"""create_app(settings): the FastAPI application, built from Settings at the edge (the CLI, the
tests); nothing is created at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.metrics import RequestMetricsMiddleware, ServiceMetrics
from api.queue import JobQueue
from api.routes import all_routers, jobs, web
from api.schemas import ErrorBody
from api.uploads import upload_slots
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.jobs.sweeper import Sweeper
from core.service.sandbox.validation import FileChecker, ValidationLimits
from core.service.webhooks.delivery import WebhookDeliverer

log = logging.getLogger(__name__)

_ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (401, "no API key, or an unknown or revoked one"),
        (404, "no such resource for this API key's owner"),
        (422, "the request is not valid; `field` names what to change"),
    )
}


def create_app(settings: Settings, *, file_checker: FileChecker | None = None) -> FastAPI:
    """The API over the service context of `settings` (database, artifact store, broker).

    Its startup makes the upload checker (warm sandboxed children) and its shutdown closes it;
    a caller that runs many apps in one process (a test session) may pass one to share."""
    context = ServiceContext.build(settings)
    queue = JobQueue(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        checker = file_checker
        if checker is None:
            # The sandbox is probed once per process; ROBUSTIFY_SANDBOX=bubblewrap on a host
            # without it stops here.
            limits = await run_in_threadpool(ValidationLimits.from_settings, settings)
            checker = FileChecker(limits)
            checker.start()
        app.state.file_checker = checker
        sweeper = None
        if settings.run_sweeper:
            sweeper = Sweeper(context.sessions, settings, queue.enqueue)
            sweeper.start()
        deliverer = None
        if settings.run_webhook_delivery:
            deliverer = WebhookDeliverer(context.sessions, settings)
            deliverer.start()
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.stop()
            if deliverer is not None:
                deliverer.stop()
            if file_checker is None:
                checker.close()
            context.engine.dispose()

    app = FastAPI(
        title="robustify",
        version="1",
        summary="Robustness as a service: adversarial fine-tuning of image classifiers.",
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    app.state.context = context
    app.state.queue = queue
    app.state.upload_slots = upload_slots(per_owner=settings.upload_slots_per_owner)
    app.state.event_streams = jobs.EventStreams(per_owner=settings.max_event_streams_per_owner)
    app.state.metrics = ServiceMetrics(context, queue)
    for router in all_routers():
        app.include_router(router)
    app.mount("/static", web.static_files(), name="static")
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    return app
