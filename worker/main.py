"""`celery -A worker.main worker`: the only module that builds an app at import, from the
ROBUSTIFY_* environment Celery's command was started with (`robustify worker` builds its own
app from the Settings it is given instead: worker.celery_app.make_celery)."""

from core.service.config import Settings
from worker.celery_app import make_celery

app = make_celery(Settings())
