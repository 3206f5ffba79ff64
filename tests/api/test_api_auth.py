"""API keys: none, a wrong one or a revoked one is a 401; another owner's resources are 404."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from http_checks import assert_error, job_body, npz_bytes

from core.robust.datasets.loading import DatasetSplits
from core.service.auth import create_key, revoke_key
from core.service.context import ServiceContext
from core.service.db import transaction


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer rk_not-a-real-key", "Basic dXNlcjpwYXNz", "Bearer "],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
def test_requests_without_a_valid_key_get_401(client: TestClient, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/job_x")]:
        response = client.request(method, path, headers=headers, json={})
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_revoked_key_gets_401(client: TestClient, context: ServiceContext):
    with transaction(context.sessions) as session:
        created = create_key(session, owner_name="carol")
    headers = {"Authorization": f"Bearer {created.key}"}
    assert client.get("/v1/models", headers=headers).status_code == 200
    with transaction(context.sessions) as session:
        revoke_key(session, created.record.id)
    assert_error(client.get("/v1/models", headers=headers), 401, "unauthorized")


def test_other_owner_gets_404_for_a_model(
    client: TestClient, stored_model: dict[str, Any], other_headers: dict[str, str]
):
    model_id = stored_model["id"]
    for method, path in [
        ("GET", f"/v1/models/{model_id}"),
        ("GET", f"/v1/models/{model_id}/content"),
        ("DELETE", f"/v1/models/{model_id}"),
    ]:
        assert_error(client.request(method, path, headers=other_headers), 404, "not_found")
    listed = client.get("/v1/models", headers=other_headers).json()
    assert listed["items"] == []


def test_other_owner_cannot_use_a_model_in_a_job(
    client: TestClient, stored_model: dict[str, Any], other_headers: dict[str, str]
):
    response = client.post("/v1/jobs", headers=other_headers, json=job_body(stored_model["id"]))
    error = assert_error(response, 422)
    assert error["field"] == "model_id"


def test_other_owner_gets_404_for_a_job(
    client: TestClient,
    stored_model: dict[str, Any],
    headers: dict[str, str],
    other_headers: dict[str, str],
):
    job = client.post("/v1/jobs", headers=headers, json=job_body(stored_model["id"])).json()
    for method, path in [
        ("GET", f"/v1/jobs/{job['id']}"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
        ("GET", f"/v1/jobs/{job['id']}/checkpoints"),
        ("GET", f"/v1/jobs/{job['id']}/checkpoints/1/content"),
    ]:
        assert_error(client.request(method, path, headers=other_headers), 404, "not_found")
    assert client.get("/v1/jobs", headers=other_headers).json()["items"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=headers).json()["status"] == "queued"


def test_other_owner_gets_404_for_a_dataset(
    client: TestClient,
    headers: dict[str, str],
    other_headers: dict[str, str],
    digits: DatasetSplits,
    stored_model: dict[str, Any],
):
    response = client.post(
        "/v1/datasets",
        headers=headers,
        files={"file": ("digits.npz", npz_bytes(digits))},
        data={"name": "mine"},
    )
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    for method in ("GET", "DELETE"):
        response = client.request(method, f"/v1/datasets/{dataset_id}", headers=other_headers)
        assert_error(response, 404, "not_found")
    listed = client.get("/v1/datasets", headers=other_headers).json()["items"]
    assert dataset_id not in [item["id"] for item in listed]
    # Nor can their jobs read it.
    other_model = stored_model["id"]  # alice's model: mallory's job fails on the model first
    body = job_body(other_model, dataset=dataset_id)
    assert_error(client.post("/v1/jobs", headers=other_headers, json=body), 422)
