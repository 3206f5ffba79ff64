"""The REST API (FastAPI): HTTP in, calls into core, JSON out. Built in issue 3."""
