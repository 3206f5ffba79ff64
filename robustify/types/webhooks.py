"""Webhook endpoints and their deliveries as the API answers them (`WebhookOut`,
`WebhookCreated`, `WebhookDeliveryOut`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from robustify.decoding import ApiObject


@dataclass(frozen=True, kw_only=True)
class Webhook(ApiObject):
    id: str
    url: str
    events: list[str]  # job.queued, job.running, job.succeeded, job.failed, job.cancelled
    created_at: datetime
    # Answered once, by `client.webhooks.create`; None everywhere else: keep it then.
    secret: str | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class WebhookDelivery(ApiObject):
    id: str
    event_id: str  # the Robustify-Event-Id header, the same on every retry
    event_type: str
    job_id: str
    status: str  # pending, delivered or failed
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)
