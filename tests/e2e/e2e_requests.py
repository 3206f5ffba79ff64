"""What the end-to-end tests do as a client: an API key, the digits CNN as a model file, and
its upload over HTTP to a running API."""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
from model_rows import DIGITS_INPUT
from torch import nn

from core.robust.models.modelio import model_from_module, save_model
from core.service import auth
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction


def create_api_key(settings: Settings, *, owner_name: str) -> str:
    context = ServiceContext.build(settings)
    try:
        with transaction(context.sessions) as session:
            return auth.create_key(session, owner_name=owner_name).key
    finally:
        context.engine.dispose()


def digits_model_file(net: nn.Module, folder: Path) -> Path:
    """`net` (builtin:digits_cnn) saved in the upload's format at folder/digits_cnn.pt."""
    model = model_from_module(
        copy.deepcopy(net),
        architecture="builtin:digits_cnn",
        input_shape=DIGITS_INPUT,
        num_classes=10,
    )
    path = folder / "digits_cnn.pt"
    save_model(model, path)
    return path


def upload_digits_model(client: httpx.Client, path: Path) -> str:
    """POST the digits CNN file at `path` to /v1/models, streamed from the open file; the
    model's id (the answer must be 201)."""
    with path.open("rb") as file:
        response = client.post(
            "/v1/models",
            files={"file": ("digits_cnn.pt", file, "application/octet-stream")},
            data={
                "name": "digits-cnn",
                "format": "state_dict",
                "architecture": "builtin:digits_cnn",
                "num_classes": "10",
                "input_shape": "[1,8,8]",
            },
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
