"""One error shape everywhere: domain errors by the one table, FastAPI's validation, routing."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from http_checks import assert_error

import core.service.errors
import core.service.sandbox.validation
from core.robust.errors import RobustError
from core.service.errors import ERROR_TABLE, status_and_code


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_every_domain_error_has_its_own_http_mapping():
    classes = {core.service.errors.ServiceError, RobustError}
    classes |= all_subclasses(core.service.errors.ServiceError) | all_subclasses(RobustError)
    assert {cls.__name__ for cls in classes} >= set(core.service.errors.__all__) - {"ServiceError"}
    unmapped = sorted(cls.__name__ for cls in classes if cls not in ERROR_TABLE)
    assert unmapped == []
    for cls in classes:
        status, code = status_and_code(cls("x"))
        # The client's fault, but for a full artifact store and a service shutting down: the
        # server's, and 507 and 503 say so.
        server_side = {
            core.service.errors.StorageFull: 507,
            core.service.errors.ServiceUnavailable: 503,
        }
        expected = [server_side[cls]] if cls in server_side else range(400, 500)
        assert status in expected and code


def test_unknown_route_and_method_answer_in_the_error_shape(client: TestClient):
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    response = client.put("/v1/models")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"]


def test_malformed_json_is_422(client: TestClient, headers: dict[str, str]):
    response = client.post(
        "/v1/jobs", headers={**headers, "Content-Type": "application/json"}, content=b"{nope"
    )
    assert_error(response, 422, "invalid_json")


def test_wrong_types_name_the_field(client: TestClient, headers: dict[str, str]):
    body = {"kind": "harden", "model_id": "mdl_x", "dataset": "builtin:digits", "seed": "zero"}
    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)
    assert error["field"] == "seed"
    error = assert_error(client.post("/v1/jobs", headers=headers, json=[]), 422)
    assert error["code"] == "invalid_request"
    error = assert_error(client.get("/v1/models", headers=headers, params={"limit": 0}), 422)
    assert error["field"] == "limit"


def test_an_unexpected_error_is_a_500_in_the_error_shape(app: FastAPI):
    def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        error = assert_error(client.get("/broken"), 500, "internal_error")
    assert "a bug" not in error["message"]
