"""`celery -A worker.main worker`: the only module that builds an app at import."""

from core.service.config import Settings
from worker.celery_app import make_celery

app = make_celery(Settings())
