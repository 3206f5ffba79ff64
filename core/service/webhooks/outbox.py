"""The outbox: when a job changes state, one delivery row per subscribed endpoint of its owner,
written in the transaction of the change itself, so whichever process makes it (the API, a
worker, the sweeper) no change is lost and none is told of without having happened."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.service.ids import new_id
from core.service.tables import Job, WebhookDelivery, WebhookEndpoint, utcnow

# One event per state of a job's life (core.service.jobs.lifecycle.STATUSES; a test checks).
EVENT_TYPES = ("job.queued", "job.running", "job.succeeded", "job.failed", "job.cancelled")
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)


def record_job_state(session: Session, job: Job) -> list[WebhookDelivery]:
    """Queue the event "job.<status>" for each of the owner's endpoints that subscribed to it."""
    event_type = f"job.{job.status}"
    # FOR KEY SHARE (PostgreSQL): a DELETE of one of these endpoints waits for this transaction
    # (then cascades to the deliveries written here) instead of committing between this read
    # and the insert, whose foreign key would then fail and roll back the job's state change.
    owned = (
        select(WebhookEndpoint)
        .where(WebhookEndpoint.owner_id == job.owner_id)
        .with_for_update(read=True, key_share=True)
    )
    endpoints = [endpoint for endpoint in session.scalars(owned) if event_type in endpoint.events]
    if not endpoints:
        return []
    now = utcnow()
    event_id = new_id("evt")
    body = event_body(event_id=event_id, event_type=event_type, created=now, job=job)
    deliveries = [
        WebhookDelivery(
            id=new_id("whd"),
            endpoint_id=endpoint.id,
            event_id=event_id,
            event_type=event_type,
            job_id=job.id,
            body=body,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for endpoint in endpoints
    ]
    session.add_all(deliveries)
    return deliveries


def event_body(*, event_id: str, event_type: str, created: datetime, job: Job) -> str:
    """The JSON text posted (and signed): {id, type, created, data: {job}}."""
    event = {
        "id": event_id,
        "type": event_type,
        "created": created.isoformat(),
        "data": {"job": job_summary(job)},
    }
    return json.dumps(event, separators=(",", ":"))


def job_summary(job: Job) -> dict[str, Any]:
    """What a receiver needs to act on the change; the rest is at GET /v1/jobs/{id}."""

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "model_id": job.model_id,
        "dataset": job.dataset,
        "result_model_id": job.result_model_id,
        "verdict": (job.metrics or {}).get("verdict"),
        "error": job.error,
        "attempts": job.attempts,
        "created_at": when(job.created_at),
        "started_at": when(job.started_at),
        "finished_at": when(job.finished_at),
    }
