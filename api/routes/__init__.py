"""One router per resource; create_app mounts them all."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import datasets, health, jobs, models, report, web, webhooks


def all_routers() -> list[APIRouter]:
    return [
        models.router,
        datasets.router,
        jobs.router,
        webhooks.router,
        report.router,
        health.router,
        web.router,
    ]
