"""resources.world_size in a job request: stored, routed to its world size's queue, bounded, and
refused when the global batch does not divide among the ranks."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from http_checks import assert_error, job_body

from core.service.context import ServiceContext
from core.service.tables import Job


def test_a_two_rank_job_is_stored_with_its_world_size_and_sent_to_its_queue(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    enqueued: list[str],
):
    body = job_body(stored_model["id"], resources={"world_size": 2})

    response = client.post("/v1/jobs", headers=headers, json=body)

    assert response.status_code == 202, response.text
    with context.sessions() as session:
        stored = session.get(Job, response.json()["id"])
        assert stored is not None and stored.config["resources"] == {"world_size": 2}
    assert enqueued == [response.json()["id"]]


def test_a_batch_that_does_not_divide_among_the_ranks_is_422_naming_the_batch_size(
    client: TestClient, headers: dict[str, str]
):
    body = job_body("mdl_0", hyperparameters={"batch_size": 63}, resources={"world_size": 2})

    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)

    assert error["field"] == "hyperparameters.batch_size"
    assert "divisible by resources.world_size 2" in error["message"]


def test_a_world_size_out_of_bounds_is_422_naming_it(client: TestClient, headers: dict[str, str]):
    body = job_body("mdl_0", resources={"world_size": 0})

    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)

    assert error["field"] == "resources.world_size"
