"""Operations: liveness, readiness naming what is down, Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from http_checks import assert_error, job_body
from test_api_events import write_epoch

from core.service.config import Settings
from core.service.context import ServiceContext


def test_healthz_and_readyz_answer_when_all_is_up(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "broker": "ok"}


def test_readyz_names_the_broker_when_it_is_down(app_factory: Callable[..., TestClient]):
    client = app_factory(broker_url="redis://127.0.0.1:1/0", run_sweeper=False)
    error = assert_error(client.get("/readyz"), 503, "not_ready")
    assert "broker unreachable" in error["message"]
    assert "database" not in error["message"]
    assert client.get("/healthz").status_code == 200


def test_readyz_names_the_database_when_it_is_down(app_factory: Callable[..., TestClient]):
    client = app_factory(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none", run_sweeper=False
    )
    error = assert_error(client.get("/readyz"), 503, "not_ready")
    assert "database unreachable" in error["message"]


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or (
            line.startswith(name + "{") and line.split(" ")[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_metrics_report_jobs_queue_epochs_and_request_latency(
    settings: Settings,
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    job = client.post("/v1/jobs", headers=headers, json=job_body(stored_model["id"])).json()
    write_epoch(context, job["id"], 1, b"weights")
    client.get(f"/v1/models/{stored_model['id']}", headers=headers)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric_value(text, 'robustify_jobs{status="queued"}') == 1
    assert metric_value(text, 'robustify_jobs{status="succeeded"}') == 0
    depth = metric_value(text, "robustify_queue_depth")
    if settings.broker_url is None:  # the embedded broker is this test's own folder
        assert depth == 1
    else:  # every test session on the machine shares the Redis test database
        assert depth >= 0
    assert metric_value(text, "robustify_epoch_seconds_count") == 1
    assert metric_value(text, 'robustify_epoch_seconds_bucket{le="5"}') == 1
    # Labelled by route template, never by the id in the path.
    route_count = (
        'robustify_http_request_duration_seconds_count{method="GET",'
        'route="/v1/models/{model_id}",status="200"}'
    )
    assert metric_value(text, route_count) == 1
    assert stored_model["id"] not in text


def test_each_app_has_its_own_metrics(app_factory: Callable[..., TestClient]):
    first, second = app_factory(), app_factory()
    first.get("/healthz")
    first.get("/healthz")
    count = (
        'robustify_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}'
    )
    assert metric_value(first.get("/metrics").text, count) == 2
    assert count not in second.get("/metrics").text
