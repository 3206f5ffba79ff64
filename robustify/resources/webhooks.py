"""`client.webhooks`: endpoints for signed job state notifications (create, list, get, delete)
and each one's deliveries. Check a delivery in the receiver with
`robustify.webhooks.verify_signature`."""

from __future__ import annotations

import builtins
from collections.abc import Iterator

from robustify.connection import Connection
from robustify.types.webhooks import Webhook, WebhookDelivery


class Webhooks:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def create(self, url: str, *, events: builtins.list[str]) -> Webhook:
        """A new endpoint; its `secret` is in this answer only (the API never shows it again)."""
        body = {"url": url, "events": events}
        return Webhook.from_json(self._connection.json("POST", "/v1/webhooks", json=body))

    def list(self) -> Iterator[Webhook]:
        """Every endpoint of this owner, newest first (without their secrets)."""
        return self._connection.paged("/v1/webhooks", Webhook.from_json)

    def get(self, webhook_id: str) -> Webhook:
        return Webhook.from_json(self._connection.json("GET", f"/v1/webhooks/{webhook_id}"))

    def delete(self, webhook_id: str) -> None:
        """Delete the endpoint; its pending deliveries are dropped."""
        self._connection.request("DELETE", f"/v1/webhooks/{webhook_id}")

    def deliveries(
        self, webhook_id: str, *, status: str | None = None
    ) -> Iterator[WebhookDelivery]:
        """The endpoint's deliveries, newest first; `status`: pending, delivered or failed."""
        params = {"status": status} if status is not None else None
        return self._connection.paged(
            f"/v1/webhooks/{webhook_id}/deliveries", WebhookDelivery.from_json, params
        )
