"""`client.models`: upload (checked by the API before it answers), list, get, download
(sha256-checked), delete."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from pathlib import Path

from robustify.connection import Connection
from robustify.transfer import ProgressCallback
from robustify.types.catalog import Model


class Models:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def upload(
        self,
        path: str | Path,
        *,
        input_shape: builtins.list[int] | tuple[int, int, int],
        num_classes: int | None = None,
        name: str | None = None,
        architecture: str | None = None,
        format: str | None = None,
        mean: builtins.list[float] | None = None,
        std: builtins.list[float] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Model:
        """Stream a model file to the API, which checks it (one forward pass) before it says 201.

        `architecture` (builtin:<name> or torchvision:<name>) is needed for a state_dict or
        safetensors file; `mean`/`std` are the normalization the model expects, if any.
        """
        fields: dict[str, str] = {"input_shape": json.dumps(builtins.list(input_shape))}
        optional = {"name": name, "architecture": architecture, "format": format}
        fields.update({key: value for key, value in optional.items() if value is not None})
        if num_classes is not None:
            fields["num_classes"] = str(num_classes)
        if mean is not None:
            fields["mean"] = json.dumps(builtins.list(mean))
        if std is not None:
            fields["std"] = json.dumps(builtins.list(std))
        answer = self._connection.upload(
            "/v1/models", file_path=Path(path), fields=fields, on_progress=on_progress
        )
        return Model.from_json(answer)

    def list(self) -> Iterator[Model]:
        """Every model of this owner, newest first (pages are fetched as the loop goes)."""
        return self._connection.paged("/v1/models", Model.from_json)

    def get(self, model_id: str) -> Model:
        return Model.from_json(self._connection.json("GET", f"/v1/models/{model_id}"))

    def delete(self, model_id: str) -> None:
        self._connection.request("DELETE", f"/v1/models/{model_id}")

    def download(
        self, model_id: str, path: str | Path, *, on_progress: ProgressCallback | None = None
    ) -> Path:
        """Save the model's file at `path` (checked against its sha256); returns `path`."""
        return self._connection.download(
            f"/v1/models/{model_id}/content", destination=Path(path), on_progress=on_progress
        )
