"""Webhook endpoints and their deliveries: what POST /v1/webhooks takes and what it answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import StrictRequest, from_row
from core.service.tables import WebhookDelivery, WebhookEndpoint
from core.service.webhooks.outbox import DELIVERY_STATUSES, EVENT_TYPES
from core.service.webhooks.targets import MAX_URL_LENGTH

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
DeliveryStatus = Literal[DELIVERY_STATUSES]  # type: ignore[valid-type]


class WebhookCreate(StrictRequest):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="http(s) URL on a public address; loopback, private, link-local, multicast "
        "and reserved addresses are refused unless ROBUSTIFY_WEBHOOKS_ALLOW_PRIVATE=true",
    )
    events: list[EventType] = Field(
        min_length=1,
        max_length=len(EVENT_TYPES),
        description="the job state changes to post: " + ", ".join(EVENT_TYPES),
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookOut:
        return from_row(cls, endpoint)


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="signs every delivery (Robustify-Signature); shown this once, never again"
    )

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> WebhookCreated:
        return from_row(cls, endpoint)


class WebhookDeliveryOut(BaseModel):
    id: str
    event_id: str = Field(description="the Robustify-Event-Id header: the same on every retry")
    event_type: str
    job_id: str
    status: DeliveryStatus = Field(description="pending (being tried), delivered or failed")
    attempts: int
    next_attempt_at: datetime | None = Field(description="while pending")
    last_status_code: int | None = Field(description="the receiver's last HTTP status")
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> WebhookDeliveryOut:
        pending = delivery.status == "pending"
        return from_row(
            cls, delivery, next_attempt_at=delivery.next_attempt_at if pending else None
        )
