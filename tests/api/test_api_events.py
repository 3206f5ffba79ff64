"""A job's events (paged JSON and a live SSE stream) and its checkpoints, as a worker leaves
them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi.testclient import TestClient
from http_checks import assert_error, job_body

from core.robust.finetune import EpochMetrics
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.ids import new_id
from core.service.jobs import lifecycle
from core.service.tables import Checkpoint, Job


def create_job(client: TestClient, headers: dict[str, str], model: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", headers=headers, json=job_body(model["id"]))
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def cancel_in_core(context: ServiceContext, job: Job) -> None:
    with transaction(context.sessions) as session:
        lifecycle.request_cancel(session, owner_id=job.owner_id, job_id=job.id)


def test_events_are_paged_in_order(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    job_id = create_job(client, headers, stored_model)
    client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    first = client.get(f"/v1/jobs/{job_id}/events", headers=headers, params={"limit": 1}).json()
    assert [event["type"] for event in first["items"]] == ["queued"]
    assert first["next_cursor"] == str(first["items"][0]["id"])
    rest = client.get(
        f"/v1/jobs/{job_id}/events", headers=headers, params={"after": first["next_cursor"]}
    ).json()
    assert [event["type"] for event in rest["items"]] == ["cancelled"]
    assert rest["next_cursor"] is None


def read_sse(client: TestClient, url: str, headers: dict[str, str]) -> list[dict[str, str]]:
    """Every message of an SSE stream, read until the server closes it."""
    messages, current = [], {}
    with client.stream("GET", url, headers={**headers, "Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if not line:
                if "id" in current:
                    messages.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    return messages


def test_sse_stream_follows_a_job_until_it_ends(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    job_id = create_job(client, headers, stored_model)
    with context.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
    # The stream is open and waiting when the job ends; it must then deliver and close.
    timer = threading.Timer(1.0, cancel_in_core, args=(context, job))
    timer.start()
    try:
        messages = read_sse(client, f"/v1/jobs/{job_id}/events", headers)
    finally:
        timer.join()
    assert [message["event"] for message in messages] == ["queued", "cancelled"]
    ids = [int(message["id"]) for message in messages]
    assert ids == sorted(ids)

    resumed = read_sse(
        client, f"/v1/jobs/{job_id}/events", {**headers, "Last-Event-ID": str(ids[0])}
    )
    assert [int(message["id"]) for message in resumed] == ids[1:]


def test_a_stream_that_ended_gives_its_slot_back(
    app_factory: Callable[..., TestClient],
    client: TestClient,
    headers: dict[str, str],
    stored_model: dict[str, Any],
):
    job_id = create_job(client, headers, stored_model)
    client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    one_stream = app_factory(max_event_streams_per_owner=1)
    url = f"/v1/jobs/{job_id}/events"
    # Each stream of the ended job closes after its events; the next one must find the slot
    # free (read_sse checks for a 200). The cap itself: tests/api/test_api_availability.py.
    for _ in range(3):
        messages = read_sse(one_stream, url, headers)
        assert [message["event"] for message in messages] == ["queued", "cancelled"]


def write_epoch(context: ServiceContext, job_id: str, epoch: int, payload: bytes) -> None:
    """What core.service.jobs.pipeline writes after an epoch: the checkpoint, its model file, the
    row."""
    key = f"jobs/{job_id}/checkpoints/epoch-{epoch:04d}.pt"
    stored = context.store.put_bytes(key, b"resumable checkpoint")
    context.store.put_bytes(key.removesuffix(".pt") + ".model", payload)
    metrics = EpochMetrics(
        epoch=epoch,
        train_loss=1.0,
        train_robust_accuracy=0.5,
        lr=0.01,
        epsilon=0.2,
        val_clean_accuracy=0.9,
        val_robust_accuracy=0.4,
        seconds=3.0,
        gradient_passes=100,
        train_seconds=2.5,
    )
    with transaction(context.sessions) as session:
        session.add(
            Checkpoint(
                id=new_id("ckpt"),
                job_id=job_id,
                epoch=epoch,
                storage_key=key,
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                metrics=asdict(metrics),
            )
        )
        job = session.get(Job, job_id)
        assert job is not None
        job.progress = {"phase": "training", "epoch": epoch, "epochs": 2, "fraction": 0.5}
        job.metrics = {"before": {"clean_accuracy": 0.9}, "epochs": [asdict(metrics)]}


def test_checkpoints_list_and_download(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    job_id = create_job(client, headers, stored_model)
    assert client.get(f"/v1/jobs/{job_id}/checkpoints", headers=headers).json()["items"] == []
    write_epoch(context, job_id, 1, b"weights of epoch one")

    page = client.get(f"/v1/jobs/{job_id}/checkpoints", headers=headers).json()
    assert [item["epoch"] for item in page["items"]] == [1]
    assert page["items"][0]["metrics"]["val_robust_accuracy"] == 0.4
    url = page["items"][0]["content_url"]
    content = client.get(url, headers=headers)
    assert content.status_code == 200 and content.content == b"weights of epoch one"
    part = client.get(url, headers={**headers, "Range": "bytes=0-6"})
    assert part.status_code == 206 and part.content == b"weights"
    cached = client.get(url, headers={**headers, "If-None-Match": content.headers["ETag"]})
    assert cached.status_code == 304
    assert_error(client.get(f"/v1/jobs/{job_id}/checkpoints/2/content", headers=headers), 404)

    shown = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert shown["progress"]["epoch"] == 1
    assert shown["metrics"]["before"] == {"clean_accuracy": 0.9}
    assert shown["metrics"]["epochs"][0]["epoch"] == 1
    assert shown["metrics"]["after"] is None and shown["result_model_id"] is None
