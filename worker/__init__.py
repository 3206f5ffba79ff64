"""The Celery worker: runs jobs by calling core; one process per GPU. Built in issue 3."""
