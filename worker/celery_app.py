"""make_celery(settings): the worker's Celery app, configured for long GPU jobs."""

from __future__ import annotations

from celery import Celery

from core.broker import celery_config
from core.config import Settings


def make_celery(settings: Settings) -> Celery:
    app = Celery("robustify")
    app.conf.update(celery_config(settings))
    app.conf.robustify_settings = settings
    from worker.tasks import register_tasks

    register_tasks(app)
    return app
