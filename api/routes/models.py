"""/v1/models: upload (streamed, checked in a child process), list, show, delete, download."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api.deps import ContextDep, CursorQuery, FileCheckerDep, LimitQuery, OwnerDep, SessionDep
from api.downloads import artifact_download
from api.registration import store_checked_upload
from api.schemas import ID_PATTERN, ModelOut, Page
from api.uploads import (
    UPLOAD_RESPONSES,
    ReceivedUpload,
    clean_text,
    upload_request_body,
)
from core.robust.datasets.catalog import MAX_CLASSES
from core.robust.models.formats import FILE_SUFFIXES, FORMATS
from core.service import catalog
from core.service.errors import InvalidRequest
from core.service.ids import new_id
from core.service.sandbox.validation import ModelDeclaration, ValidatedModel
from core.service.tables import Model

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelId = Annotated[str, Path(max_length=40, pattern=ID_PATTERN)]
MAX_DIMENSION = 4096

_FORM_FIELDS = {
    "name": {"type": "string", "maxLength": 200, "description": "default: the file's name"},
    "format": {"type": "string", "enum": list(FORMATS), "description": "default: detected"},
    "architecture": {
        "type": "string",
        "description": "builtin:<name>, torchvision:<name> or timm:<name>",
    },
    "num_classes": {"type": "integer", "minimum": 1},
    "input_shape": {"type": "string", "description": '[C,H,W] as JSON ("[1,8,8]") or "1,8,8"'},
    "mean": {"type": "string", "description": "one value per channel, JSON list or commas"},
    "std": {"type": "string", "description": "one value per channel, JSON list or commas"},
}


@router.post(
    "",
    status_code=201,
    openapi_extra={"requestBody": upload_request_body(_FORM_FIELDS)},
    responses=UPLOAD_RESPONSES,
    summary="Upload a model",
)
async def upload_model(
    request: Request, owner: OwnerDep, context: ContextDep, checker: FileCheckerDep
) -> ModelOut:
    """Stream the file to storage (sha256, size limit), check it in a child process (format,
    one forward pass on the declared input), then register it. A refused upload leaves
    nothing behind."""
    model_id = new_id("mdl")

    def check(upload: ReceivedUpload, path: pathlib.Path) -> ValidatedModel:
        return checker.check_model(path, _declaration(upload.fields))

    def row_of(upload: ReceivedUpload, checked: ValidatedModel) -> Model:
        return Model(
            id=model_id,
            owner_id=owner.id,
            name=_name(upload),
            format=checked.format,
            architecture=checked.architecture,
            input_shape=checked.input_shape,
            num_classes=checked.num_classes,
            mean=checked.mean,
            std=checked.std,
            sha256=upload.artifact.sha256,
            size_bytes=upload.artifact.size_bytes,
            storage_key=upload.artifact.key,
            source_job_id=None,
            warnings=[],
        )

    row = await store_checked_upload(
        request,
        context,
        owner_id=owner.id,
        prefix=catalog.model_prefix(model_id),
        key_for=lambda _filename: catalog.model_key(model_id),
        max_bytes=context.settings.max_model_bytes,
        check=check,
        row_of=row_of,
        check_fields=lambda upload: _declaration(upload.fields),
    )
    return ModelOut.of(row)


@router.get("", summary="List your models")
def list_models(
    owner: OwnerDep, session: SessionDep, limit: LimitQuery = 20, cursor: CursorQuery = None
) -> Page[ModelOut]:
    page = catalog.list_models(session, owner.id, limit=limit, cursor=cursor)
    return Page(items=[ModelOut.of(row) for row in page.items], next_cursor=page.next_cursor)


@router.get("/{model_id}", summary="Show a model")
def show_model(model_id: ModelId, owner: OwnerDep, session: SessionDep) -> ModelOut:
    return ModelOut.of(catalog.get_model(session, owner.id, model_id))


@router.delete("/{model_id}", status_code=204, summary="Delete a model and its file")
def delete_model(
    model_id: ModelId, owner: OwnerDep, session: SessionDep, context: ContextDep
) -> Response:
    catalog.delete_model(session, context.store, owner.id, model_id)
    return Response(status_code=204)


@router.get(
    "/{model_id}/content",
    summary="Download the model file",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "the requested byte range"},
        304: {"description": "not modified (If-None-Match matched the ETag)"},
        416: {"description": "the range lies outside the file"},
    },
)
def download_model(
    model_id: ModelId, request: Request, owner: OwnerDep, session: SessionDep, context: ContextDep
) -> Response:
    """The file as uploaded (or as the hardening job wrote it). ETag is its sha256; Range
    and If-None-Match are honoured."""
    model = catalog.get_model(session, owner.id, model_id)
    return artifact_download(
        request,
        context.store,
        model.storage_key,
        etag=f'"{model.sha256}"',
        filename=f"{model.name}{FILE_SUFFIXES.get(model.format, '')}",
    )


# -- the upload's form fields ---------------------------------------------------------------

# Normalization constants past these are typos (pixels are 0..1 or 0..255), and a tiny std
# turns every input into infinities.
MAX_NORMALIZATION = 1e4
MIN_STD = 1e-6


def _name(upload: ReceivedUpload) -> str:
    return clean_text(upload.fields.get("name", "")) or upload.filename


def _declaration(fields: dict[str, str]) -> ModelDeclaration:
    if "input_shape" not in fields:
        raise InvalidRequest(
            'input_shape is required: [C,H,W] as JSON ("[1,8,8]") or "1,8,8"',
            field="input_shape",
        )
    shape = _numbers(fields["input_shape"], "input_shape", integers=True)
    if len(shape) != 3 or not all(1 <= d <= MAX_DIMENSION for d in shape):
        raise InvalidRequest(
            f"input_shape must be three integers [C, H, W] between 1 and {MAX_DIMENSION}",
            field="input_shape",
        )
    input_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    mean = _channel_values(fields, "mean", input_shape[0])
    std = _channel_values(fields, "std", input_shape[0])
    if std is not None and not all(value >= MIN_STD for value in std):
        raise InvalidRequest(f"std values must all be >= {MIN_STD:g}", field="std")
    return ModelDeclaration(
        input_shape=input_shape,
        num_classes=_num_classes(fields.get("num_classes")),
        mean=mean,
        std=std,
        architecture=_optional_text(fields, "architecture"),
        format=_format(fields.get("format")),
    )


def _numbers(text: str, field: str, *, integers: bool = False) -> list[float]:
    """A flat list of at most MAX_DIMENSION finite numbers, as JSON or comma-separated.

    The shape of the text is checked before it is parsed: a deeply nested JSON list would
    make the parser recurse until the interpreter gives up."""
    kind = "integers" if integers else "numbers"
    refused = InvalidRequest(
        f"{field} must be a flat list of {kind}, as JSON or comma-separated; got {text[:60]!r}",
        field=field,
    )
    stripped = text.strip()
    if _nesting_depth(stripped) > 1 or "{" in stripped:
        raise refused
    if stripped.count(",") >= MAX_DIMENSION:
        raise InvalidRequest(f"{field} has more than {MAX_DIMENSION} values", field=field)
    raw: Any
    try:
        raw = json.loads(stripped) if stripped.startswith("[") else stripped.split(",")
        values = [int(str(v).strip()) if integers else float(str(v).strip()) for v in raw]
    except (ValueError, TypeError, RecursionError):
        raise refused from None
    if not all(math.isfinite(v) for v in values):
        raise InvalidRequest(f"{field} values must be finite numbers", field=field)
    return values


def _nesting_depth(text: str) -> int:
    """How deep the brackets of `text` nest (a JSON string holding a bracket counts too:
    no number list has one)."""
    depth = deepest = 0
    for character in text:
        if character == "[":
            depth += 1
            deepest = max(deepest, depth)
        elif character == "]":
            depth -= 1
    return deepest


def _channel_values(fields: dict[str, str], field: str, channels: int) -> tuple[float, ...] | None:
    text = fields.get(field, "").strip()
    if not text:
        return None
    values = _numbers(text, field)
    if len(values) != channels:
        raise InvalidRequest(
            f"{field} has {len(values)} values but input_shape has {channels} channels",
            field=field,
        )
    if not all(abs(value) <= MAX_NORMALIZATION for value in values):
        raise InvalidRequest(
            f"{field} values must lie between -{MAX_NORMALIZATION:g} and {MAX_NORMALIZATION:g}",
            field=field,
        )
    return tuple(values)


def _num_classes(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CLASSES:
        raise InvalidRequest(
            f"num_classes must be an integer between 1 and {MAX_CLASSES}", field="num_classes"
        )
    return value


def _optional_text(fields: dict[str, str], field: str) -> str | None:
    text = fields.get(field, "").strip()
    if len(text) > 200:
        raise InvalidRequest(f"{field} is longer than 200 characters", field=field)
    return text or None


def _format(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    if text.strip() not in FORMATS:
        raise InvalidRequest(
            f"format must be one of {', '.join(FORMATS)} (or left out to detect it)",
            field="format",
        )
    return text.strip()
