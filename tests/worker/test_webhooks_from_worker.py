"""Webhooks of a job run by a real Celery worker process: the worker's own state changes
(running, succeeded) reach the outbox in its transactions and are posted by the delivery
thread the API runs, signed, beside the change the API process made (queued)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from webhook_receiver import Receiver, running_receiver
from worker_harness import Service, WorkerProcess, harden_config

from core.service.config import Settings
from core.service.db import transaction
from core.service.jobs.lifecycle import SUCCEEDED
from core.service.webhooks.delivery import WebhookDeliverer
from core.service.webhooks.endpoints import create_endpoint
from robustify.webhooks import verify_signature


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with running_receiver() as value:
        yield value


@pytest.fixture()
def deliverer(embedded_service: Service) -> Iterator[WebhookDeliverer]:
    """The API's delivery thread over the service's database, allowed to post to loopback."""
    settings: Settings = embedded_service.settings.model_copy(
        update={"webhooks_allow_private": True, "webhook_poll_interval_seconds": 0.1}
    )
    thread = WebhookDeliverer(embedded_service.context.sessions, settings)
    thread.start()
    yield thread
    thread.stop()


def test_a_job_run_by_a_worker_is_told_at_each_state(
    embedded_service: Service,
    start_worker: Callable[..., WorkerProcess],
    receiver: Receiver,
    deliverer: WebhookDeliverer,
) -> None:
    with transaction(embedded_service.context.sessions) as session:
        endpoint = create_endpoint(
            session,
            owner_id=embedded_service.owner_id,
            url=receiver.url,
            events=["job.queued", "job.running", "job.succeeded"],
            allow_private=True,
        )
        secret = endpoint.secret
    job_id = embedded_service.create_job(harden_config(epochs=1))
    worker = start_worker(embedded_service.settings)

    embedded_service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    requests = receiver.wait_for(3)
    events = {}
    for request in requests:
        event = verify_signature(
            request.body, request.headers["Robustify-Signature"], secret=secret
        )
        events[event["type"]] = event["data"]["job"]
    assert set(events) == {"job.queued", "job.running", "job.succeeded"}
    assert len(requests) == 3
    succeeded = events["job.succeeded"]
    assert succeeded["id"] == job_id and succeeded["status"] == "succeeded"
    assert succeeded["result_model_id"] == embedded_service.job(job_id).result_model_id
    assert succeeded["result_model_id"] is not None
    assert json.loads(requests[0].body)["data"]["job"]["id"] == job_id
