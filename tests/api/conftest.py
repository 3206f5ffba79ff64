"""Fixtures for the HTTP API: an app on the embedded parts and one on PostgreSQL + Redis, API
keys of two owners, model files in every accepted format, and an uploaded model."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from http_checks import store_model, upload_model
from torch import nn

from api.app import create_app
from core.robust.models.architectures import build_architecture
from core.robust.models.modelio import model_from_module, save_model
from core.service.auth import create_key
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.sandbox.validation import FileChecker, ValidationLimits

DIGITS_SHAPE = (1, 8, 8)


@pytest.fixture(params=["embedded", "production"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """The embedded configuration (SQLite, filesystem broker) and production (PostgreSQL, Redis)."""
    value: Settings = request.getfixturevalue(f"{request.param}_settings")
    return value


@pytest.fixture(scope="session")
def file_checkers() -> Iterator[Callable[[Settings], FileChecker]]:
    """One upload checker per set of limits for the whole session: an app of its own would
    start a sandboxed child that imports torch (seconds) for every test."""
    checkers: dict[tuple[Any, ...], FileChecker] = {}

    def checker_for(settings: Settings) -> FileChecker:
        # The settings ValidationLimits.from_settings reads: it probes the sandbox each call.
        key = (
            settings.validation_timeout_seconds,
            settings.validation_memory_bytes,
            settings.sandbox,
            settings.sandbox_max_processes,
            settings.allow_unsandboxed_torchscript,
        )
        if key not in checkers:
            checkers[key] = FileChecker(ValidationLimits.from_settings(settings))
            checkers[key].start()
        return checkers[key]

    yield checker_for
    for checker in checkers.values():
        checker.close()


@pytest.fixture()
def app_factory(
    settings: Settings, file_checkers: Callable[[Settings], FileChecker]
) -> Iterator[Callable[..., TestClient]]:
    """Build apps over `settings` with some fields changed; each runs its lifespan (sweeper)."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            changed = settings.model_copy(update=overrides)
            app = create_app(changed, file_checker=file_checkers(changed))
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture()
def client(app_factory: Callable[..., TestClient]) -> TestClient:
    return app_factory()


@pytest.fixture()
def app(client: TestClient) -> FastAPI:
    value: FastAPI = client.app  # type: ignore[assignment]
    return value


@pytest.fixture()
def context(app: FastAPI) -> ServiceContext:
    value: ServiceContext = app.state.context
    return value


@pytest.fixture()
def enqueued(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The job ids the API sends to the broker, in order (still sent: this only listens).

    Counted here rather than in the queue: the PostgreSQL + Redis tests of every test session
    on a machine share one Redis database."""
    calls: list[str] = []
    queue = app.state.queue
    send = queue.enqueue

    def listen(job_id: str, **routing: int) -> None:
        calls.append(job_id)
        send(job_id, **routing)

    monkeypatch.setattr(queue, "enqueue", listen)
    return calls


def new_key(context: ServiceContext, owner: str) -> str:
    with transaction(context.sessions) as session:
        return create_key(session, owner_name=owner).key


@pytest.fixture()
def headers(context: ServiceContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key(context, 'alice')}"}


@pytest.fixture()
def other_headers(context: ServiceContext) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_key(context, 'mallory')}"}


# -- files ----------------------------------------------------------------------------------


def _wrapped(net: nn.Module, format: str) -> Any:
    return model_from_module(
        net,
        input_shape=DIGITS_SHAPE,
        num_classes=10,
        architecture="builtin:digits_cnn",
        format=format,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def digits_cnn() -> nn.Module:
    """The digits CNN with fresh weights: uploads only check format and shapes, and training
    the session's `digits_cnn` would cost these tests most of their time budget."""
    torch.manual_seed(0)
    return build_architecture("builtin:digits_cnn", input_shape=DIGITS_SHAPE, num_classes=10)


@pytest.fixture(scope="session")
def model_files(digits_cnn: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN as a state_dict, a TorchScript archive and a safetensors file."""
    folder = tmp_path_factory.mktemp("model-files")
    files = {
        name: folder / f"digits-{name}" for name in ("state_dict", "torchscript", "safetensors")
    }
    save_model(_wrapped(digits_cnn, "state_dict"), files["state_dict"])
    save_model(_wrapped(digits_cnn, "safetensors"), files["safetensors"])
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, and still accepted
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(copy.deepcopy(digits_cnn).eval())
        torch.jit.save(scripted, str(files["torchscript"]))
    return files


@pytest.fixture()
def uploaded_model(
    client: TestClient, headers: dict[str, str], model_files: dict[str, Path]
) -> dict[str, Any]:
    response = upload_model(client, headers, model_files["state_dict"])
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture()
def stored_model(
    context: ServiceContext, headers: dict[str, str], model_files: dict[str, Path]
) -> dict[str, Any]:
    """alice's digits model, in the store and the database (see store_model)."""
    return store_model(context, headers, model_files["state_dict"])
