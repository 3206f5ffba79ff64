"""Client: the v1 API as one API key's owner, its resources grouped as `models`, `datasets`,
`jobs` and `webhooks`; typed results, errors as exceptions."""

from __future__ import annotations

import os
from typing import Any

import httpx

from robustify.connection import Connection
from robustify.resources import Datasets, Jobs, Models, Webhooks

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0


class Client:
    """A client of one robustify API, as one API key's owner.

    `url` and `api_key` default to ROBUSTIFY_URL (else http://127.0.0.1:8000) and
    ROBUSTIFY_API_KEY. Every call raises `ApiError` when the API refuses and `ApiUnavailable`
    when it cannot be reached. Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("ROBUSTIFY_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("ROBUSTIFY_API_KEY")
        self.timeout = timeout
        self._connection = Connection(self.url, self.api_key, timeout=timeout, transport=transport)
        self.models = Models(self._connection)
        self.datasets = Datasets(self._connection)
        self.jobs = Jobs(self._connection)
        self.webhooks = Webhooks(self._connection)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        """GET /healthz: the API process answers."""
        return self._connection.json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        """GET /readyz: the database and the broker are reachable (ApiError 503 if not)."""
        return self._connection.json("GET", "/readyz")
