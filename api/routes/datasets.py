"""/v1/datasets: upload (.npz or an ImageFolder archive, checked in a child process), list
(builtins included), show, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api.deps import ContextDep, CursorQuery, FileCheckerDep, LimitQuery, OwnerDep, SessionDep
from api.registration import store_checked_upload
from api.schemas import ID_PATTERN, DatasetOut, Page
from api.uploads import (
    FILE_FIELD,
    UPLOAD_RESPONSES,
    ReceivedUpload,
    clean_text,
    upload_request_body,
)
from core.service import catalog
from core.service.errors import InvalidRequest
from core.service.ids import new_id
from core.service.sandbox.validation import ValidatedDataset
from core.service.tables import Dataset

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

DatasetId = Annotated[str, Path(max_length=200, pattern=ID_PATTERN)]
# The stored file keeps its extension: the engine's load_dataset dispatches on it.
SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".npz")

_FORM_FIELDS = {
    "name": {"type": "string", "maxLength": 200, "description": "default: the file's name"},
}


def _suffix(filename: str) -> str:
    lowered = filename.lower()
    for suffix in SUFFIXES:
        if lowered.endswith(suffix):
            return suffix
    raise InvalidRequest(
        f"{filename!r} is not a dataset file: send an .npz (x, y, optional x_test, y_test) "
        "or an ImageFolder archive (.zip, .tar.gz) with one folder per class",
        field=FILE_FIELD,
    )


@router.post(
    "",
    status_code=201,
    openapi_extra={"requestBody": upload_request_body(_FORM_FIELDS)},
    responses=UPLOAD_RESPONSES,
    summary="Upload a dataset",
)
async def upload_dataset(
    request: Request, owner: OwnerDep, context: ContextDep, checker: FileCheckerDep
) -> DatasetOut:
    """Stream the file to storage, load it in a child process (archive guards, shapes,
    labels), then register it. A refused upload leaves nothing behind."""
    dataset_id = new_id("ds")
    prefix = catalog.dataset_prefix(dataset_id)

    def row_of(upload: ReceivedUpload, checked: ValidatedDataset) -> Dataset:
        return Dataset(
            id=dataset_id,
            owner_id=owner.id,
            name=clean_text(upload.fields.get("name", "")) or upload.filename,
            kind=checked.kind,
            file_name=upload.filename,
            sha256=upload.artifact.sha256,
            size_bytes=upload.artifact.size_bytes,
            storage_key=upload.artifact.key,
            input_shape=checked.input_shape,
            num_classes=checked.num_classes,
            train_size=checked.train_size,
            test_size=checked.test_size,
        )

    row = await store_checked_upload(
        request,
        context,
        owner_id=owner.id,
        prefix=prefix,
        key_for=lambda filename: f"{prefix}/data{_suffix(filename)}",
        max_bytes=context.settings.max_dataset_bytes,
        check=lambda _upload, path: checker.check_dataset(path),
        row_of=row_of,
    )
    return DatasetOut.of(row)


@router.get("", summary="List the builtin datasets and yours")
def list_datasets(
    owner: OwnerDep, session: SessionDep, limit: LimitQuery = 20, cursor: CursorQuery = None
) -> Page[DatasetOut]:
    page = catalog.list_datasets(session, owner.id, limit=limit, cursor=cursor)
    return Page(items=[DatasetOut.of(entry) for entry in page.items], next_cursor=page.next_cursor)


@router.get("/{dataset_id}", summary="Show a dataset (ds_… or builtin:<name>)")
def show_dataset(dataset_id: DatasetId, owner: OwnerDep, session: SessionDep) -> DatasetOut:
    return DatasetOut.of(catalog.get_dataset(session, owner.id, dataset_id))


@router.delete("/{dataset_id}", status_code=204, summary="Delete an uploaded dataset")
def delete_dataset(
    dataset_id: DatasetId, owner: OwnerDep, session: SessionDep, context: ContextDep
) -> Response:
    catalog.delete_dataset(session, context.store, owner.id, dataset_id)
    return Response(status_code=204)
