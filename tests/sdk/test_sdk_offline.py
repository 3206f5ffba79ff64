"""The SDK's own logic on canned answers (httpx.MockTransport): SSE parsing, errors that are not
the API's shape, paging, polling where SSE is refused, and a download that fails its checksum."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from robustify import (
    ApiError,
    ChecksumMismatch,
    Client,
    Event,
    Hyperparameters,
    ThreatModelOptions,
)
from robustify.sse import read_sse

NOW = "2026-01-01T00:00:00Z"


def model_json(model_id: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "name": model_id,
        "format": "state_dict",
        "architecture": "builtin:digits_cnn",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "mean": None,
        "std": None,
        "sha256": "0" * 64,
        "size_bytes": 3,
        "source_job_id": None,
        "warnings": [],
        "created_at": NOW,
        "content_url": f"/v1/models/{model_id}/content",
    }


def job_json(status: str) -> dict[str, Any]:
    return {
        "id": "job_1",
        "kind": "harden",
        "status": status,
        "model_id": "mdl_1",
        "dataset": "builtin:digits",
        "progress": {"phase": "training", "epoch": 1, "epochs": 2, "fraction": 0.5},
        "metrics": {"before": None, "after": None, "epochs": []},
        "error": None,
        "created_at": NOW,
    }


def event_json(event_id: int, kind: str) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "message": kind, "data": {}, "created_at": NOW}


def client_of(handler: Any) -> Client:
    return Client("http://api.test", "rk_test", transport=httpx.MockTransport(handler))


def test_sse_messages_are_built_from_fields_until_a_blank_line() -> None:
    lines = ["retry: 2000", "", ": keep-alive", "id: 7", "event: epoch", "data: {", "data: }", ""]
    messages = list(read_sse(lines))
    assert [(m.id, m.event, m.data) for m in messages] == [("7", "epoch", "{\n}")]


def test_an_error_that_is_not_the_apis_shape_still_raises_api_error() -> None:
    with client_of(lambda request: httpx.Response(502, text="Bad Gateway")) as client:
        with pytest.raises(ApiError) as raised:
            client.models.get("mdl_1")
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        502,
        "http_502",
        "Bad Gateway",
    )


def test_lists_follow_next_cursor_to_the_last_page() -> None:
    pages = {
        None: {"items": [model_json("mdl_3"), model_json("mdl_2")], "next_cursor": "c2"},
        "c2": {"items": [model_json("mdl_1")], "next_cursor": None},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with client_of(handler) as client:
        assert [model.id for model in client.models.list()] == ["mdl_3", "mdl_2", "mdl_1"]


def test_wait_polls_events_when_the_stream_is_refused() -> None:
    events = [event_json(1, "queued"), event_json(2, "started"), event_json(3, "epoch_like")]
    polls = {"count": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/job_1/events":
            if "text/event-stream" in request.headers.get("accept", ""):
                return httpx.Response(406, json={"error": {"code": "x", "message": "no SSE"}})
            after = int(request.url.params["after"])
            visible = events[: min(polls["count"], 3)]
            return httpx.Response(
                200, json={"items": [e for e in visible if e["id"] > after], "next_cursor": None}
            )
        polls["count"] += 1
        return httpx.Response(200, json=job_json("succeeded" if polls["count"] >= 4 else "running"))

    seen: list[Event] = []
    with client_of(handler) as client:
        job = client.jobs.wait("job_1", on_event=seen.append, poll_interval=0.01, timeout=10)
    assert job.status == "succeeded"
    assert [event.id for event in seen] == [1, 2, 3]


def test_a_download_that_fails_its_checksum_leaves_no_file(tmp_path: Path) -> None:
    announced = hashlib.sha256(b"the real bytes").hexdigest()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"other bytes", headers={"ETag": f'"{announced}"'})

    with client_of(handler) as client, pytest.raises(ChecksumMismatch):
        client.models.download("mdl_1", tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_job_options_left_out_are_left_to_the_server() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json=job_json("queued"))

    with client_of(handler) as client:
        client.jobs.create(
            kind="harden",
            model_id="mdl_1",
            threat_model=ThreatModelOptions(epsilon=0.1),
            hyperparameters=Hyperparameters(epochs=3),
        )
    assert bodies == [
        {
            "kind": "harden",
            "model_id": "mdl_1",
            "dataset": "builtin:digits",
            "threat_model": {"epsilon": 0.1},
            "hyperparameters": {"epochs": 3},
        }
    ]
