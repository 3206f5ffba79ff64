"""The outbox against a concurrent DELETE of an endpoint (PostgreSQL, where transactions really
run side by side): the job's state change still commits, and the endpoint's deliveries go with
the endpoint."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from model_rows import owner_with_a_bare_model
from sqlalchemy import event, func, select, text

from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.tables import Job, WebhookDelivery, WebhookEndpoint
from core.service.webhooks import endpoints


@pytest.fixture()
def context(production_settings: Settings) -> Iterator[ServiceContext]:
    value = ServiceContext.build(production_settings)
    yield value
    value.engine.dispose()


def running_job_with_endpoint(context: ServiceContext) -> tuple[str, str, str]:
    """(owner, job, endpoint): a job claimed by worker w1, its owner subscribed to its end."""
    with transaction(context.sessions) as session:
        owner_id, model = owner_with_a_bare_model(session)
        job, _ = lifecycle.create_job(
            session,
            owner_id=owner_id,
            kind="harden",
            model_id=model.id,
            dataset="builtin:digits",
            config={},
        )
        endpoint = endpoints.create_endpoint(
            session,
            owner_id=owner_id,
            url="http://127.0.0.1:9/hook",
            events=["job.succeeded"],
            allow_private=True,
        )
        job_id, endpoint_id = job.id, endpoint.id
    claimed = lifecycle.claim_job(
        context.sessions, job_id, worker_id="w1", lease_seconds=60, max_attempts=3
    )
    assert claimed is not None
    return owner_id, job_id, endpoint_id


def waiting_on_a_lock(context: ServiceContext) -> bool:
    with context.engine.connect() as connection:
        count = connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(count)


def test_an_endpoint_deleted_during_a_jobs_finish_leaves_the_job_succeeded(
    context: ServiceContext,
):
    owner_id, job_id, endpoint_id = running_job_with_endpoint(context)
    endpoints_read, release = threading.Event(), threading.Event()

    def hold_the_finish_open(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # The finish has read the owner's endpoints; its insert of their deliveries waits.
        if threading.current_thread().name == "finisher" and "FROM webhook_endpoints" in statement:
            endpoints_read.set()
            release.wait(timeout=10)

    outcome: dict[str, BaseException | None] = {}

    def finish() -> None:
        try:
            lifecycle.finish_job(
                context.sessions, job_id, worker_id="w1", status=lifecycle.SUCCEEDED
            )
            outcome["finish"] = None
        except BaseException as exc:  # recorded for the assertion below
            outcome["finish"] = exc

    def delete() -> None:
        with transaction(context.sessions) as session:
            endpoints.delete_endpoint(session, owner_id, endpoint_id)

    event.listen(context.engine, "after_cursor_execute", hold_the_finish_open)
    finisher = threading.Thread(target=finish, name="finisher")
    deleter = threading.Thread(target=delete, name="deleter")
    try:
        finisher.start()
        assert endpoints_read.wait(timeout=10)
        deleter.start()
        # The delete either commits at once (no lock) or waits on the finish's lock.
        deadline = time.monotonic() + 10
        while deleter.is_alive() and not waiting_on_a_lock(context):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        release.set()
        finisher.join(timeout=20)
        deleter.join(timeout=20)
    finally:
        release.set()
        event.remove(context.engine, "after_cursor_execute", hold_the_finish_open)

    assert outcome["finish"] is None, outcome["finish"]
    with context.sessions() as session:
        assert session.scalar(select(Job.status).where(Job.id == job_id)) == lifecycle.SUCCEEDED
        assert session.get(WebhookEndpoint, endpoint_id) is None
        # The delivery written by the finish went with its endpoint (the foreign key cascades).
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
