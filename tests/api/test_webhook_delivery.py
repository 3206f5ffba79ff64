"""Webhook deliveries to a real receiver on loopback (private targets allowed here): a job's
state change posted signed, retried after a failure with the same event id, given up after
the attempts allowed; nothing posted once an endpoint is deleted; the outbox written in the
state change's own transaction; redirects not followed and the target checked again."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from http_checks import job_body, row_count
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker
from webhook_receiver import (
    Received,
    Receiver,
    running_receiver,
    self_signed_certificate,
    trickling_receiver,
    wait_until,
)

from core.service import auth
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.tables import Model, WebhookDelivery
from core.service.webhooks import endpoints
from core.service.webhooks.delivery import Attempt, WebhookDeliverer, post, prune_finished
from robustify.webhooks import verify_signature


@pytest.fixture()
def client(app_factory: Any) -> TestClient:
    """An app whose delivery loop polls often, retries soon and may post to loopback."""
    return app_factory(
        run_sweeper=False,  # the tests sweep themselves, when they mean to
        webhooks_allow_private=True,
        webhook_poll_interval_seconds=0.05,
        webhook_backoff_seconds=0.1,
        webhook_max_attempts=3,
        webhook_timeout_seconds=2.0,
    )


@pytest.fixture()
def receiver() -> Any:
    with running_receiver() as value:
        yield value


def subscribe(client: TestClient, headers: dict[str, str], url: str, events: list[str]) -> Any:
    response = client.post("/v1/webhooks", headers=headers, json={"url": url, "events": events})
    assert response.status_code == 201, response.text
    return response.json()


def create_job(client: TestClient, headers: dict[str, str], model: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", headers=headers, json=job_body(model["id"]))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def deliveries(client: TestClient, headers: dict[str, str], endpoint_id: str) -> list[Any]:
    response = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


def signed_correctly(request: Received, secret: str) -> bool:
    """The HMAC-SHA256 of "<t>.<body>", recomputed here, is the header's v1."""
    fields = dict(item.split("=", 1) for item in request.headers["Robustify-Signature"].split(","))
    signed = fields["t"].encode() + b"." + request.body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 60


def test_job_state_changes_are_delivered_signed(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    receiver: Receiver,
):
    endpoint = subscribe(client, headers, receiver.url, ["job.queued", "job.running"])
    job_id = create_job(client, headers, stored_model)  # the API makes it queued
    # A worker's claim makes it running (in another process in production: the same code).
    claimed = lifecycle.claim_job(
        context.sessions, job_id, worker_id="w1", lease_seconds=30, max_attempts=3
    )
    assert claimed is not None

    # Deliveries due together are posted at once: in no particular order.
    received = {json.loads(r.body)["type"]: r for r in receiver.wait_for(2)}
    first, second = received["job.queued"], received["job.running"]
    for request, state in [(first, "queued"), (second, "running")]:
        assert signed_correctly(request, endpoint["secret"])
        event = json.loads(request.body)
        assert event["type"] == f"job.{state}" == request.headers["Robustify-Event-Type"]
        assert event["id"] == request.headers["Robustify-Event-Id"]
        assert event["data"]["job"]["id"] == job_id
        assert event["data"]["job"]["status"] == state
        assert request.path == "/hook"
        assert (
            verify_signature(
                request.body, request.headers["Robustify-Signature"], secret=endpoint["secret"]
            )
            == event
        )
    assert first.headers["Robustify-Event-Id"] != second.headers["Robustify-Event-Id"]
    wait_until(
        lambda: (
            [d["status"] for d in deliveries(client, headers, endpoint["id"])]
            == ["delivered", "delivered"]
        )
    )
    listed = deliveries(client, headers, endpoint["id"])
    assert sorted(d["event_type"] for d in listed) == ["job.queued", "job.running"]
    assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in listed)


def test_only_subscribed_events_are_delivered(
    client: TestClient,
    headers: dict[str, str],
    stored_model: dict[str, Any],
    receiver: Receiver,
):
    endpoint = subscribe(client, headers, receiver.url, ["job.cancelled"])
    job_id = create_job(client, headers, stored_model)
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 202
    (request,) = receiver.wait_for(1)
    assert json.loads(request.body)["type"] == "job.cancelled"
    time.sleep(0.3)  # several polls: nothing else (the job.queued event) comes
    assert len(receiver.requests) == 1
    assert len(deliveries(client, headers, endpoint["id"])) == 1


def test_a_failed_delivery_is_retried_with_the_same_event_id(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    with running_receiver([500]) as receiver:
        endpoint = subscribe(client, headers, receiver.url, ["job.queued"])
        create_job(client, headers, stored_model)
        first, second = receiver.wait_for(2)
    assert first.headers["Robustify-Event-Id"] == second.headers["Robustify-Event-Id"]
    assert first.body == second.body
    assert signed_correctly(second, endpoint["secret"])
    wait_until(lambda: deliveries(client, headers, endpoint["id"])[0]["status"] == "delivered")
    (delivery,) = deliveries(client, headers, endpoint["id"])
    assert delivery["attempts"] == 2
    assert delivery["last_status_code"] == 200
    assert delivery["event_id"] == first.headers["Robustify-Event-Id"]


def test_a_delivery_fails_after_the_attempts_allowed(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    with running_receiver([503] * 10) as receiver:
        endpoint = subscribe(client, headers, receiver.url, ["job.queued"])
        create_job(client, headers, stored_model)
        wait_until(lambda: deliveries(client, headers, endpoint["id"])[0]["status"] == "failed")
        time.sleep(0.5)  # past the backoff: no fourth attempt
        assert len(receiver.requests) == 3
    (delivery,) = deliveries(client, headers, endpoint["id"])
    assert delivery["attempts"] == 3
    assert delivery["last_status_code"] == 503
    assert delivery["last_error"] == "HTTP 503"
    assert delivery["next_attempt_at"] is None


def test_deleting_an_endpoint_stops_its_deliveries(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    with running_receiver([500] * 100) as receiver:
        endpoint = subscribe(client, headers, receiver.url, ["job.queued", "job.cancelled"])
        job_id = create_job(client, headers, stored_model)
        receiver.wait_for(1)  # being retried
        assert client.delete(f"/v1/webhooks/{endpoint['id']}", headers=headers).status_code == 204
        time.sleep(0.3)  # a post in flight at the delete may still land
        count = len(receiver.requests)
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 202
        time.sleep(0.6)  # several backoffs and polls
        assert len(receiver.requests) == count
    assert row_count(context, WebhookDelivery) == 0


def test_a_rolled_back_state_change_leaves_no_delivery(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    receiver: Receiver,
):
    subscribe(client, headers, receiver.url, ["job.queued"])
    owner_id = stored_model_owner(context, stored_model["id"])
    with pytest.raises(RuntimeError), transaction(context.sessions) as session:
        lifecycle.create_job(
            session,
            owner_id=owner_id,
            kind="harden",
            model_id=stored_model["id"],
            dataset="builtin:digits",
            config={},
        )
        written = session.scalar(select(func.count()).select_from(WebhookDelivery))
        assert written == 1  # written beside the job...
        raise RuntimeError("the transaction fails")
    assert row_count(context, WebhookDelivery) == 0  # ...and gone with it
    time.sleep(0.3)
    assert receiver.requests == []


def stored_model_owner(context: ServiceContext, model_id: str) -> str:
    with context.sessions() as session:
        model = session.get(Model, model_id)
        assert model is not None
        return model.owner_id


def attempt_to(url: str) -> Attempt:
    return Attempt(
        delivery_id="whd_1",
        endpoint_id="whk_1",
        event_id="evt_1",
        event_type="job.queued",
        url=url,
        secret="whsec_test",
        body='{"id":"evt_1"}',
        attempt=1,
    )


def test_a_receiver_trickling_its_answer_delays_no_other_endpoint(
    client: TestClient,
    headers: dict[str, str],
    stored_model: dict[str, Any],
    receiver: Receiver,
):
    # webhook_timeout_seconds=2: each byte comes within httpx's read timeout, never the answer.
    with trickling_receiver(byte_seconds=1.0) as slow:
        slow_endpoint = subscribe(client, headers, slow.url, ["job.queued"])
        create_job(client, headers, stored_model)
        wait_until(lambda: len(slow.accepted) == 1)  # its post is in flight
        fast_endpoint = subscribe(client, headers, receiver.url, ["job.queued"])
        create_job(client, headers, stored_model)

        wait_until(
            lambda: deliveries(client, headers, fast_endpoint["id"])[0]["status"] == "delivered",
            timeout=1.5,
        )
        assert time.monotonic() - slow.accepted[0] < 2.0  # while the slow post still runs

        def slow_attempt_ended() -> list[Any]:
            return [d for d in deliveries(client, headers, slow_endpoint["id"]) if d["last_error"]]

        wait_until(lambda: bool(slow_attempt_ended()), timeout=5)
        assert time.monotonic() - slow.accepted[0] < 2.0 + 1.5  # at its deadline, not later
        (ended,) = slow_attempt_ended()
        assert ended["last_error"] == "no answer within 2 s"
        assert ended["status"] == "pending" and ended["last_status_code"] is None
    assert len(receiver.requests) == 1


def test_a_delivery_checks_its_target_again(receiver: Receiver):
    with httpx.Client() as http:
        outcome = post(http, attempt_to(receiver.url), allow_private=False)
    assert not outcome.delivered
    assert outcome.error is not None and "loopback" in outcome.error
    assert receiver.requests == []


def test_an_unexpected_error_mid_post_is_a_failed_attempt():
    def crash(request: httpx.Request) -> httpx.Response:
        raise ValueError("the transport broke")  # not an httpx.HTTPError

    with httpx.Client(transport=httpx.MockTransport(crash)) as http:
        outcome = post(http, attempt_to("http://127.0.0.1:9/hook"), allow_private=True)
    assert not outcome.delivered and outcome.status_code is None
    assert outcome.error == "ValueError: the transport broke"


def test_a_delivery_whose_last_attempt_left_no_outcome_is_failed_not_posted(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    receiver: Receiver,
):
    endpoint = subscribe(client, headers, receiver.url, ["job.cancelled"])
    job_id = create_job(client, headers, stored_model)
    # As a process that died mid-post leaves it: its 3rd (last) attempt counted, its hold over.
    with transaction(context.sessions) as session:
        session.add(
            WebhookDelivery(
                id="whd_orphaned",
                endpoint_id=endpoint["id"],
                event_id="evt_orphaned",
                event_type="job.cancelled",
                job_id=job_id,
                body="{}",
                status="pending",
                attempts=3,
                next_attempt_at=datetime.now(UTC),
                created_at=datetime.now(UTC),
            )
        )
    wait_until(lambda: deliveries(client, headers, endpoint["id"])[0]["status"] == "failed")
    (delivery,) = deliveries(client, headers, endpoint["id"])
    assert delivery["attempts"] == 3
    assert "left no outcome" in delivery["last_error"]
    time.sleep(0.3)
    assert receiver.requests == []


def test_the_delivery_client_ignores_proxies_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, receiver: Receiver
):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    deliverer = WebhookDeliverer(sessionmaker(), Settings(webhooks_allow_private=True))
    try:
        outcome = post(deliverer.client, attempt_to(receiver.url), allow_private=True)
    finally:
        deliverer.stop()
    assert outcome.delivered, outcome
    assert len(receiver.requests) == 1


def test_a_redirect_is_not_followed():
    with running_receiver([302]) as receiver, httpx.Client() as http:
        outcome = post(http, attempt_to(receiver.url), allow_private=True)
        assert not outcome.delivered and outcome.status_code == 302
        assert len(receiver.requests) == 1  # the Location was never asked for


def tls_receiver_context(tmp_path: Path, host: str) -> tuple[ssl.SSLContext, Path]:
    cert, key = self_signed_certificate(tmp_path, host)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, cert


def test_an_https_delivery_goes_to_the_checked_address_under_the_urls_name(tmp_path: Path):
    server, cert = tls_receiver_context(tmp_path, "localhost")
    trusting = ssl.create_default_context(cafile=str(cert))
    with running_receiver(tls=server) as receiver, httpx.Client(verify=trusting) as http:
        url = f"https://localhost:{receiver.port}/hook"
        outcome = post(http, attempt_to(url), allow_private=True)
        assert outcome.delivered, outcome
        (request,) = receiver.requests
    assert request.headers["Host"] == f"localhost:{receiver.port}"


def test_an_https_delivery_checks_the_certificate_against_the_urls_host(tmp_path: Path):
    server, cert = tls_receiver_context(tmp_path, "other.example")
    trusting = ssl.create_default_context(cafile=str(cert))
    with running_receiver(tls=server) as receiver, httpx.Client(verify=trusting) as http:
        outcome = post(
            http, attempt_to(f"https://localhost:{receiver.port}/hook"), allow_private=True
        )
        assert receiver.requests == []
    assert not outcome.delivered and outcome.status_code is None
    assert outcome.error is not None and "certificate" in outcome.error.lower(), outcome


def test_a_workers_end_and_a_sweepers_requeue_are_delivered(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    receiver: Receiver,
):
    subscribe(client, headers, receiver.url, ["job.queued", "job.succeeded"])
    job_id = create_job(client, headers, stored_model)
    factory = context.sessions
    # A worker whose lease ran out: the sweeper queues the job again...
    assert lifecycle.claim_job(factory, job_id, worker_id="w1", lease_seconds=0.01, max_attempts=3)
    time.sleep(0.05)
    assert lifecycle.sweep(factory, max_attempts=3, requeue_queued_after=timedelta(hours=1)) == [
        job_id
    ]
    # ...and the next worker finishes it, as the pipeline does.
    assert lifecycle.claim_job(factory, job_id, worker_id="w2", lease_seconds=30, max_attempts=3)
    lifecycle.finish_job(factory, job_id, worker_id="w2", status=lifecycle.SUCCEEDED)

    requests = receiver.wait_for(3)
    events = [json.loads(request.body) for request in requests]
    assert sorted(event["type"] for event in events) == [
        "job.queued",
        "job.queued",
        "job.succeeded",
    ]
    (finished,) = [e["data"]["job"] for e in events if e["type"] == "job.succeeded"]
    assert finished["status"] == "succeeded" and finished["attempts"] == 2
    assert finished["finished_at"] is not None
    assert len({event["id"] for event in events}) == 3


def test_old_finished_deliveries_are_pruned_and_pending_ones_kept(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    with running_receiver([500] * 100) as receiver:
        endpoint = subscribe(client, headers, receiver.url, ["job.queued", "job.cancelled"])
        job_id = create_job(client, headers, stored_model)
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 202
        receiver.wait_for(2)
    with transaction(context.sessions) as session:
        queued = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event_type == "job.queued")
        ).one()
        queued.status = "delivered"  # as if long done; the cancelled one is still pending
    later = datetime.now(UTC) + timedelta(days=1)
    assert prune_finished(context.sessions, older_than=later) == 1
    remaining = deliveries(client, headers, endpoint["id"])
    assert [d["event_type"] for d in remaining] == ["job.cancelled"]
    assert prune_finished(context.sessions, older_than=datetime.now(UTC) - timedelta(days=1)) == 0


def test_old_deliveries_are_pruned_while_a_post_is_in_flight(embedded_settings: Settings):
    settings = embedded_settings.model_copy(
        update={"webhooks_allow_private": True, "webhook_poll_interval_seconds": 0.05}
    )
    context = ServiceContext.build(settings)
    deliverer = WebhookDeliverer(context.sessions, settings)
    now = datetime.now(UTC)
    try:
        with trickling_receiver() as slow:
            with transaction(context.sessions) as session:
                owner_id = auth.create_key(session, owner_name="alice").record.owner_id
                endpoint = endpoints.create_endpoint(
                    session,
                    owner_id=owner_id,
                    url=slow.url,
                    events=["job.queued"],
                    allow_private=True,
                )
                session.add_all(
                    [
                        delivery_row(
                            endpoint.id,
                            "whd_old",
                            status="delivered",
                            created=now - timedelta(days=31),
                        ),
                        delivery_row(endpoint.id, "whd_due", status="pending", created=now),
                    ]
                )
            deliverer.start()
            wait_until(lambda: len(slow.accepted) == 1)  # the due one's post hangs...
            # ...and the old one is pruned all the same.
            wait_until(lambda: row_count(context, WebhookDelivery) == 1, timeout=2)
            with context.sessions() as session:
                assert session.get(WebhookDelivery, "whd_due") is not None
    finally:  # the receiver gone first, the hanging post ends at once
        deliverer.stop()
        context.engine.dispose()


def delivery_row(endpoint_id: str, delivery_id: str, *, status: str, created: datetime) -> Any:
    return WebhookDelivery(
        id=delivery_id,
        endpoint_id=endpoint_id,
        event_id=f"evt_{delivery_id}",
        event_type="job.queued",
        job_id="job_1",
        body="{}",
        status=status,
        attempts=0,
        next_attempt_at=created,
        created_at=created,
    )
