"""`client.datasets`: upload (checked by the API), list (the builtin ones too), get, delete."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from robustify.connection import Connection
from robustify.transfer import ProgressCallback
from robustify.types.catalog import Dataset


class Datasets:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def upload(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Dataset:
        """Upload an .npz (x, y, optional x_test, y_test) or an ImageFolder .zip/.tar.gz."""
        fields = {"name": name} if name is not None else {}
        answer = self._connection.upload(
            "/v1/datasets", file_path=Path(path), fields=fields, on_progress=on_progress
        )
        return Dataset.from_json(answer)

    def list(self) -> Iterator[Dataset]:
        """The builtin datasets and this owner's uploads."""
        return self._connection.paged("/v1/datasets", Dataset.from_json)

    def get(self, dataset_id: str) -> Dataset:
        return Dataset.from_json(self._connection.json("GET", f"/v1/datasets/{dataset_id}"))

    def delete(self, dataset_id: str) -> None:
        self._connection.request("DELETE", f"/v1/datasets/{dataset_id}")
