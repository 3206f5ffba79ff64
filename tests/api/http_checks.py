"""What the API tests check and send: uploads, job bodies, the error shape, and what a request
left behind in the database and the artifact store."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from fastapi.testclient import TestClient
from model_rows import register_digits_model
from sqlalchemy import func, select
from torch import nn

from api.schemas import ModelOut
from core.robust.datasets.loading import DatasetSplits
from core.robust.models.modelio import detect_format
from core.service import catalog
from core.service.auth import authenticate
from core.service.context import ServiceContext

DIGITS_FIELDS = {"architecture": "builtin:digits_cnn", "num_classes": "10", "input_shape": "1,8,8"}


def upload_model(
    client: TestClient, headers: dict[str, str], path: Path, **fields: str
) -> httpx.Response:
    form = {"name": "digits", **DIGITS_FIELDS, **fields}
    form = {key: value for key, value in form.items() if value is not None}
    with path.open("rb") as handle:
        return client.post(
            "/v1/models", headers=headers, files={"file": (path.name, handle)}, data=form
        )


def store_model(
    context: ServiceContext, headers: dict[str, str], path: Path, *, name: str = "digits"
) -> dict[str, Any]:
    """The digits CNN file at `path` (a state_dict or safetensors file of builtin:digits_cnn)
    put in the artifact store and the database as an accepted upload leaves it, for the owner
    of `headers`' key: the model's API body. For the tests of what is done with a model (jobs,
    events, keys, listing); the upload itself, whose check starts a sandboxed child that
    imports torch (seconds each), is tested in test_api_models and the refused and sandboxed
    uploads."""
    with context.sessions() as session:
        owner = authenticate(session, headers["Authorization"].removeprefix("Bearer "))
    row = register_digits_model(
        context,
        owner.id,
        path,
        name=name,
        format=detect_format(path),
        architecture="builtin:digits_cnn",
    )
    with context.sessions() as session:
        return ModelOut.of(catalog.get_model(session, owner.id, row.id)).model_dump(mode="json")


def npz_bytes(digits: DatasetSplits, *, channels: int = 1) -> bytes:
    """The digits as an .npz (float NCHW in [0,1]), optionally repeated over `channels`."""
    train_x, train_y = digits.train.tensors()
    test_x, test_y = digits.test.tensors()
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x=train_x.repeat(1, channels, 1, 1).numpy(),
        y=train_y.numpy(),
        x_test=test_x.repeat(1, channels, 1, 1).numpy(),
        y_test=test_y.numpy(),
    )
    return buffer.getvalue()


def job_body(model_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "harden",
        "model_id": model_id,
        "dataset": "builtin:digits",
        "threat_model": {"norm": "linf", "epsilon": 0.2, "steps": 5},
        "hyperparameters": {"epochs": 2, "batch_size": 64},
        "evaluation": {"attack_steps": 5, "max_samples": 100},
        "seed": 0,
    }
    body.update(changes)
    return body


# -- what is left behind --------------------------------------------------------------------


def stored_files(context: ServiceContext) -> list[Path]:
    root = context.store.root
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def row_count(context: ServiceContext, table: type) -> int:
    with context.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response has `status` and DESIGN.md's error shape; returns the error object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "field"}, error
    assert error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


def scripted(module: nn.Module, folder: Path) -> Path:
    """`module` scripted and saved as a TorchScript archive in `folder`."""
    path = folder / f"{type(module).__name__}.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, and still accepted
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path
