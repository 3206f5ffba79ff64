"""Webhook endpoints through the API: created with a secret shown once, listed and shown
without it, deleted; bad URLs, unknown events and (SSRF) private targets refused with a 422
naming the problem; another owner's endpoints are not found."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from http_checks import assert_error, row_count

from core.service.context import ServiceContext
from core.service.jobs.lifecycle import STATUSES
from core.service.tables import WebhookEndpoint
from core.service.webhooks.endpoints import MAX_ENDPOINTS_PER_OWNER
from core.service.webhooks.outbox import EVENT_TYPES
from core.service.webhooks.targets import refusal_reason
from robustify import ApiError, Client, Webhook, WebhookDelivery

# A public address literal: accepted without a DNS lookup (nothing is ever posted to it here).
PUBLIC_URL = "https://93.184.215.14/robustify-hook"


def create(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post(
        "/v1/webhooks",
        headers=headers,
        json={"url": PUBLIC_URL, "events": ["job.succeeded"], **body},
    )


def test_secret_is_shown_once_at_creation(client: TestClient, headers: dict[str, str]):
    response = create(client, headers, events=["job.succeeded", "job.failed", "job.succeeded"])
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["job.succeeded", "job.failed"]

    shown = client.get(f"/v1/webhooks/{created['id']}", headers=headers)
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    assert created["secret"] not in shown.text
    listed = client.get("/v1/webhooks", headers=headers)
    assert [item["id"] for item in listed.json()["items"]] == [created["id"]]
    assert created["secret"] not in listed.text


def test_each_endpoint_has_its_own_secret(client: TestClient, headers: dict[str, str]):
    first, second = create(client, headers).json(), create(client, headers).json()
    assert first["secret"] != second["secret"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
        "http://localhost:8080/hook",  # a name resolving to loopback
        "http://[fec0::1]/hook",  # site-local
        "http://[2002:c0a8:101::1]/hook",  # 6to4 of 192.168.1.1
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
    ],
)
def test_private_targets_are_refused(
    client: TestClient, headers: dict[str, str], context: ServiceContext, url: str
):
    error = assert_error(create(client, headers, url=url), 422, "webhook_target_refused")
    assert error["field"] == "url"
    assert "ROBUSTIFY_WEBHOOKS_ALLOW_PRIVATE" in error["message"]
    assert row_count(context, WebhookEndpoint) == 0


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("fec0::1", "a site-local address"),
        ("2002:c0a8:101::1", "a 6to4 address of 192.168.1.1, a private address"),
        ("2002:7f00:1::1", "a 6to4 address of 127.0.0.1, a loopback address"),
        ("2002:5db8:d70e::1", None),  # 6to4 of a public address
        ("2606:4700:4700::1111", None),
    ],
)
def test_an_ipv6_address_is_judged_by_the_ipv4_address_inside_it(address: str, reason: str):
    assert refusal_reason(ipaddress.ip_address(address)) == reason


def test_private_targets_are_accepted_when_the_settings_allow_them(
    app_factory: Any, headers: dict[str, str]
):
    permissive = app_factory(webhooks_allow_private=True)
    response = create(permissive, headers, url="http://localhost:8080/hook")
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("ftp://93.184.215.14/hook", "http:// or https://"),
        ("93.184.215.14/hook", "http:// or https://"),
        ("http:///hook", "names no host"),
        ("http://93.184.215.14:99999/hook", "not a valid URL"),
        ("http://user:pw@93.184.215.14/hook", "credentials"),
        ("http://93.184.215.14/a b", "spaces"),
        ("http://no-such-host.invalid/hook", "does not resolve"),
    ],
)
def test_bad_urls_are_refused_naming_the_problem(
    client: TestClient, headers: dict[str, str], url: str, named: str
):
    error = assert_error(create(client, headers, url=url), 422, "webhook_target_refused")
    assert error["field"] == "url" and named in error["message"], error


def test_a_resolver_failing_for_now_is_a_503_not_a_refused_url(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    monkeypatch: pytest.MonkeyPatch,
):
    real_getaddrinfo = socket.getaddrinfo

    def resolver_down_for(name: str) -> Any:
        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host == name:  # as glibc answers when its name servers do not respond
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            return real_getaddrinfo(host, *args, **kwargs)

        return getaddrinfo

    monkeypatch.setattr(socket, "getaddrinfo", resolver_down_for("hooks.example.com"))
    response = create(client, headers, url="https://hooks.example.com/hook")
    error = assert_error(response, 503, "service_unavailable")
    assert error["field"] == "url" and "try again" in error["message"]
    assert row_count(context, WebhookEndpoint) == 0


def test_unknown_event_names_are_refused(client: TestClient, headers: dict[str, str]):
    error = assert_error(create(client, headers, events=["job.exploded"]), 422, "invalid_request")
    assert error["field"] == "events[0]"
    assert "job.succeeded" in error["message"]
    assert_error(create(client, headers, events=[]), 422, "invalid_request")
    assert_error(create(client, headers, colour="blue"), 422, "invalid_request")


def test_the_events_are_the_job_states():
    assert set(EVENT_TYPES) == {f"job.{status}" for status in STATUSES}


def test_delete_removes_the_endpoint(
    client: TestClient, headers: dict[str, str], context: ServiceContext
):
    endpoint = create(client, headers).json()
    assert client.delete(f"/v1/webhooks/{endpoint['id']}", headers=headers).status_code == 204
    assert_error(client.get(f"/v1/webhooks/{endpoint['id']}", headers=headers), 404, "not_found")
    assert_error(client.delete(f"/v1/webhooks/{endpoint['id']}", headers=headers), 404)
    assert row_count(context, WebhookEndpoint) == 0


def test_other_owner_gets_404(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str]
):
    endpoint = create(client, headers).json()
    for method, path in [
        ("GET", f"/v1/webhooks/{endpoint['id']}"),
        ("GET", f"/v1/webhooks/{endpoint['id']}/deliveries"),
        ("DELETE", f"/v1/webhooks/{endpoint['id']}"),
    ]:
        assert_error(client.request(method, path, headers=other_headers), 404, "not_found")
    assert client.get("/v1/webhooks", headers=other_headers).json()["items"] == []
    assert client.get(f"/v1/webhooks/{endpoint['id']}", headers=headers).status_code == 200


def test_webhooks_need_an_api_key(client: TestClient):
    assert_error(client.get("/v1/webhooks"), 401, "unauthorized")
    assert_error(client.post("/v1/webhooks", json={"url": PUBLIC_URL, "events": []}), 401)


def through(client: TestClient) -> httpx.MockTransport:
    """A transport that hands each SDK request to the app in this process, in full."""

    def forward(request: httpx.Request) -> httpx.Response:
        answer = client.request(
            request.method,
            request.url.path,
            params=request.url.params,
            headers=request.headers,
            content=request.content,
        )
        return httpx.Response(answer.status_code, json=answer.json() if answer.content else None)

    return httpx.MockTransport(forward)


def test_the_sdk_manages_webhooks(client: TestClient, headers: dict[str, str]):
    api_key = headers["Authorization"].removeprefix("Bearer ")
    with Client("http://testserver", api_key, transport=through(client)) as sdk:
        created = sdk.webhooks.create(PUBLIC_URL, events=["job.failed"])
        assert created.secret is not None and created.secret.startswith("whsec_")
        assert created.secret not in repr(created) and created.id in repr(created)  # logs
        assert sdk.webhooks.get(created.id).secret is None
        assert [webhook.id for webhook in sdk.webhooks.list()] == [created.id]
        assert list(sdk.webhooks.deliveries(created.id)) == []
        with pytest.raises(ApiError) as refused:
            sdk.webhooks.create("http://127.0.0.1/hook", events=["job.failed"])
        assert refused.value.status == 422 and refused.value.field == "url"
        sdk.webhooks.delete(created.id)
        assert list(sdk.webhooks.list()) == []


@pytest.mark.parametrize(
    ("sdk_type", "schema_name"),
    [(Webhook, "WebhookCreated"), (WebhookDelivery, "WebhookDeliveryOut")],
)
def test_the_sdk_types_have_the_schemas_properties(
    app: FastAPI, sdk_type: type[Any], schema_name: str
):
    properties = set(app.openapi()["components"]["schemas"][schema_name]["properties"])
    assert {field.name for field in dataclasses.fields(sdk_type)} - {"raw"} == properties


def test_an_owner_has_a_bounded_number_of_endpoints(
    client: TestClient, headers: dict[str, str], other_headers: dict[str, str]
):
    for _ in range(MAX_ENDPOINTS_PER_OWNER):
        assert create(client, headers).status_code == 201
    error = assert_error(create(client, headers), 409, "conflict")
    assert str(MAX_ENDPOINTS_PER_OWNER) in error["message"]
    assert create(client, other_headers).status_code == 201  # a limit per owner
