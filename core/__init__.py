"""Everything that is not HTTP or Celery: configuration, storage, job life, and the engine."""
