"""Per-owner limits: past the queued-jobs or stored-bytes limit, a 429 with Retry-After whose
message names the limit and its value; an Idempotency-Key replay still answers its job; a
refused upload leaves no row and no file; another owner is not held back."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from http_checks import (
    DIGITS_FIELDS,
    assert_error,
    job_body,
    npz_bytes,
    row_count,
    store_model,
    stored_files,
    upload_model,
)
from sqlalchemy import event

from api.uploads import FORM_OVERHEAD_BYTES
from core.robust.datasets.loading import DatasetSplits
from core.service.auth import create_key
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.tables import Dataset, Model


def owner_headers(context: ServiceContext, name: str) -> dict[str, str]:
    with transaction(context.sessions) as session:
        return {"Authorization": f"Bearer {create_key(session, owner_name=name).key}"}


def context_of(client: TestClient) -> ServiceContext:
    context: ServiceContext = client.app.state.context  # type: ignore[attr-defined]
    return context


def assert_limit_refusal(response: Any, code: str, *named: str) -> dict[str, Any]:
    error = assert_error(response, 429, code)
    assert int(response.headers["Retry-After"]) > 0
    for text in named:
        assert text in error["message"], error
    return error


def test_a_job_past_the_queued_limit_is_429_naming_the_limit_and_a_replay_still_answers(
    app_factory: Callable[..., TestClient], model_files: dict[str, Path]
):
    client = app_factory(max_queued_jobs_per_owner=2)
    context = context_of(client)
    alice, bob = owner_headers(context, "alice"), owner_headers(context, "bob")
    model = store_model(context, alice, model_files["state_dict"])
    keyed = {**alice, "Idempotency-Key": "first-job"}
    first = client.post("/v1/jobs", headers=keyed, json=job_body(model["id"]))
    second = client.post("/v1/jobs", headers=alice, json=job_body(model["id"]))
    assert first.status_code == second.status_code == 202

    third = client.post("/v1/jobs", headers=alice, json=job_body(model["id"]))

    assert_limit_refusal(third, "too_many_queued_jobs", "max_queued_jobs_per_owner", "is 2")
    replay = client.post("/v1/jobs", headers=keyed, json=job_body(model["id"]))
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    bobs_model = store_model(context, bob, model_files["state_dict"])
    assert client.post("/v1/jobs", headers=bob, json=job_body(bobs_model["id"])).status_code == 202
    # A place frees when a queued job leaves the queue.
    client.post(f"/v1/jobs/{second.json()['id']}/cancel", headers=alice)
    assert client.post("/v1/jobs", headers=alice, json=job_body(model["id"])).status_code == 202


def test_an_upload_past_the_stored_bytes_limit_is_429_and_leaves_nothing(
    app_factory: Callable[..., TestClient], model_files: dict[str, Path]
):
    path = model_files["state_dict"]
    size = path.stat().st_size
    client = app_factory(max_stored_bytes_per_owner=size)
    context = context_of(client)
    alice = owner_headers(context, "alice")
    store_model(context, alice, path)  # the owner's whole allowance
    files_before = stored_files(context)

    response = upload_model(client, alice, path)

    assert_limit_refusal(
        response, "stored_bytes_limit", "max_stored_bytes_per_owner", f"{size} bytes"
    )
    assert stored_files(context) == files_before
    assert row_count(context, Model) == 1


def test_an_upload_larger_than_the_room_left_is_429_and_leaves_nothing(
    app_factory: Callable[..., TestClient], model_files: dict[str, Path]
):
    path = model_files["state_dict"]
    client = app_factory(max_stored_bytes_per_owner=path.stat().st_size + ROOM)
    context = context_of(client)
    alice, bob = owner_headers(context, "alice"), owner_headers(context, "bob")
    store_model(context, alice, path)
    files_before = stored_files(context)
    sent: list[int] = []

    # Sent chunked, with no Content-Length: refused on the bytes received, soon past the room.
    response = post_chunked(client, alice, os.urandom(16 * ROOM), sent)

    error = assert_limit_refusal(
        response, "stored_bytes_limit", "max_stored_bytes_per_owner", f"{ROOM} bytes left"
    )
    assert error["field"] == "file"
    assert len(sent) <= ROOM // CHUNK + 4  # stopped reading just past the room
    assert stored_files(context) == files_before
    assert row_count(context, Model) == 1
    # Another owner's room is its own.
    assert upload_model(client, bob, path).status_code == 201


ROOM = 64 * 1024
CHUNK = 8 * 1024
BOUNDARY = "robustify-limits-boundary"


def post_chunked(
    client: TestClient, headers: dict[str, str], data: bytes, sent: list[int]
) -> httpx.Response:
    """A model upload whose body reaches the app chunk by chunk, without a Content-Length
    (httpx's ASGI transport); `sent` counts the file's chunks handed out."""

    async def body() -> AsyncIterator[bytes]:
        for name, value in {"name": "big", **DIGITS_FIELDS}.items():
            yield (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.pt"\r\n\r\n'
        ).encode()
        for start in range(0, len(data), CHUNK):
            sent.append(start)
            yield data[start : start + CHUNK]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.post(
                "/v1/models",
                headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                content=body(),
            )

    return asyncio.run(post())


def test_a_dataset_upload_past_the_stored_bytes_limit_is_429(
    app_factory: Callable[..., TestClient],
    model_files: dict[str, Path],
    digits: DatasetSplits,
):
    path = model_files["state_dict"]
    client = app_factory(max_stored_bytes_per_owner=path.stat().st_size)
    context = context_of(client)
    alice = owner_headers(context, "alice")
    store_model(context, alice, path)
    files_before = stored_files(context)

    response = client.post(
        "/v1/datasets",
        headers=alice,
        files={"file": ("digits.npz", io.BytesIO(npz_bytes(digits)))},
    )

    assert_limit_refusal(response, "stored_bytes_limit", "max_stored_bytes_per_owner")
    assert stored_files(context) == files_before
    assert row_count(context, Dataset) == 0


def test_a_harden_job_at_the_stored_bytes_limit_is_429_and_an_evaluation_is_not(
    app_factory: Callable[..., TestClient], model_files: dict[str, Path]
):
    path = model_files["state_dict"]
    client = app_factory(max_stored_bytes_per_owner=path.stat().st_size)
    context = context_of(client)
    alice = owner_headers(context, "alice")
    model = store_model(context, alice, path)

    harden = client.post("/v1/jobs", headers=alice, json=job_body(model["id"]))
    evaluate = client.post("/v1/jobs", headers=alice, json=job_body(model["id"], kind="evaluate"))

    assert_limit_refusal(harden, "stored_bytes_limit", "max_stored_bytes_per_owner")
    assert evaluate.status_code == 202, evaluate.text


def test_none_in_the_environment_means_no_limit(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROBUSTIFY_MAX_QUEUED_JOBS_PER_OWNER", "none")
    monkeypatch.setenv("ROBUSTIFY_MAX_RUNNING_JOBS_PER_OWNER", "")
    monkeypatch.setenv("ROBUSTIFY_MAX_STORED_BYTES_PER_OWNER", "1000")

    settings = Settings()

    assert settings.max_queued_jobs_per_owner is None
    assert settings.max_running_jobs_per_owner is None
    assert settings.max_stored_bytes_per_owner == 1000


def test_an_upload_declared_past_the_upload_limit_is_413_even_when_the_room_is_smaller(
    app_factory: Callable[..., TestClient], model_files: dict[str, Path]
):
    path = model_files["state_dict"]
    upload_limit = 4 * ROOM
    client = app_factory(
        max_stored_bytes_per_owner=path.stat().st_size + ROOM, max_model_bytes=upload_limit
    )
    context = context_of(client)
    alice = owner_headers(context, "alice")
    store_model(context, alice, path)
    files_before = stored_files(context)
    too_large = os.urandom(upload_limit + FORM_OVERHEAD_BYTES + 1)

    response = client.post(
        "/v1/models",
        headers=alice,
        files={"file": ("big.pt", too_large)},
        data={"name": "big", **DIGITS_FIELDS},
    )

    error = assert_error(response, 413, "too_large")
    assert str(upload_limit) in error["message"] and error["field"] == "file"
    assert stored_files(context) == files_before
    assert row_count(context, Model) == 1


def test_a_keyed_retry_racing_its_first_request_at_the_queued_limit_gets_the_replay(
    app_factory: Callable[..., TestClient], model_files: dict[str, Path]
):
    client = app_factory(max_queued_jobs_per_owner=1)
    context = context_of(client)
    alice = {**owner_headers(context, "alice"), "Idempotency-Key": "raced"}
    model = store_model(context, alice, model_files["state_dict"])
    inserted = threading.Event()

    def hold_the_first_request_open(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The first request's job is inserted, its transaction (and owner lock) still open.
        if statement.startswith("INSERT INTO jobs") and not inserted.is_set():
            inserted.set()
            time.sleep(1.0)

    event.listen(context.engine, "after_cursor_execute", hold_the_first_request_open)
    answers: dict[str, httpx.Response] = {}

    def first() -> None:
        answers["first"] = client.post("/v1/jobs", headers=alice, json=job_body(model["id"]))

    thread = threading.Thread(target=first)
    try:
        thread.start()
        assert inserted.wait(timeout=10)
        answers["retry"] = client.post("/v1/jobs", headers=alice, json=job_body(model["id"]))
        thread.join()
    finally:
        event.remove(context.engine, "after_cursor_execute", hold_the_first_request_open)

    assert answers["first"].status_code == 202, answers["first"].text
    assert answers["retry"].status_code == 200, answers["retry"].text
    assert answers["retry"].json()["id"] == answers["first"].json()["id"]
