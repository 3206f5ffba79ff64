"""The page at `/` and its static files: served without a key (the page asks for one), under a
Content-Security-Policy that allows this server's own scripts only; a missing file is a 404 in
the API's error shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.service.config import Settings


@pytest.fixture()
def client(embedded_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(embedded_settings)) as test_client:
        yield test_client


def test_page_is_served_at_the_root_with_a_strict_policy(client: TestClient):
    response = client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-src blob:" in policy


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/static/app.js", "javascript"), ("/static/style.css", "text/css")],
)
def test_page_assets_are_served(client: TestClient, path: str, media_type: str):
    response = client.get(path)

    assert response.status_code == 200
    assert media_type in response.headers["content-type"]


def test_missing_static_file_is_a_404_in_the_error_shape(client: TestClient):
    response = client.get("/static/nothing-here.js")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_page_is_not_in_the_openapi_schema(client: TestClient):
    paths = client.get("/openapi.json").json()["paths"]

    assert "/" not in paths
    assert "/v1/jobs/{job_id}/report" in paths
