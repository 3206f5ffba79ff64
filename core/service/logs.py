"""Structured logs: one JSON object per line on stderr, with the job id of the job being run.

`configure_logging(settings)` is called once at each edge (the `api`, `worker` and `up`
commands). Code that runs a job wraps it in `job_context(job_id)`; every record logged inside,
by any logger, then carries `job_id` without passing it around.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from core.service.config import Settings

current_job_id: ContextVar[str | None] = ContextVar("robustify_current_job_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged
# (but not uvicorn's copy of the message with terminal colour codes).
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Records logged inside this block (in this thread or task) carry `job_id`.

    A context variable does not follow new threads: a thread started for the job should run
    its body inside its own `job_context(job_id)`.
    """
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


class JobIdFilter(logging.Filter):
    """Stamps the current job id on each record (an explicit `extra={"job_id": ...}` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            job_id = current_job_id.get()
            if job_id is not None:
                record.job_id = job_id
        return True


class JsonFormatter(logging.Formatter):
    """timestamp (UTC, ISO 8601), level, logger, message, job_id when set, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = job_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        entry["process"] = record.process
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One readable line per record, for a person at a terminal (`ROBUSTIFY_LOG_FORMAT=text`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        return f"[{job_id}] {line}" if job_id is not None else line


class _RobustifyHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so configuring twice replaces it."""


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> None:
    """Send every logger's records to stderr as JSON lines (or plain text) at `log_level`.

    The stream is bound now: Celery later swaps sys.stderr for a logging proxy, and a handler
    that looked sys.stderr up on each record would then log into itself.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _RobustifyHandler):
            root.removeHandler(handler)
    handler = _RobustifyHandler(stream if stream is not None else sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(JobIdFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.captureWarnings(True)
