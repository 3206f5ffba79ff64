"""What an owner has: models, datasets (theirs and the builtins), jobs, their events and
checkpoints; found by id (another owner's id is not found) and listed a page at a time.

Lists are keyset-paginated on the time-sortable ids, newest first: the cursor is the last id
of the previous page, opaque to clients, so a page never shifts when rows are added.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from core.robust.datasets.catalog import BUILTIN_DATASETS, BuiltinDataset
from core.service.errors import Conflict, InvalidRequest, NotFound
from core.service.jobs.lifecycle import QUEUED, RUNNING
from core.service.storage import ArtifactStore
from core.service.tables import Base, Checkpoint, Dataset, Job, JobEvent, Model

T = TypeVar("T")
JobRow = TypeVar("JobRow", JobEvent, Checkpoint)

MAX_PAGE = 100
_CURSOR_VALUE = re.compile(r"^[A-Za-z0-9_:.\-]{1,200}$")
ACTIVE_STATUSES = (QUEUED, RUNNING)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The id a cursor stands for; InvalidRequest (field `cursor`) for one we never made."""
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not _CURSOR_VALUE.match(value):
        raise InvalidRequest("cursor is not one this API handed out", field="cursor")
    return value


def keyset_page(
    session: Session,
    statement: Select[T],
    id_column: InstrumentedAttribute[str],
    *,
    limit: int,
    cursor: str | None,
) -> Page[T]:
    """One page of `statement`'s rows, newest id first, after `cursor`."""
    after = decode_cursor(cursor)
    if after is not None:
        statement = statement.where(id_column < after)
    rows = list(session.scalars(statement.order_by(id_column.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(getattr(rows[-1], id_column.key)) if more and rows else None
    return Page(items=rows, next_cursor=next_cursor)


# -- models ---------------------------------------------------------------------------------


def insert_row(sessions: sessionmaker[Session], row: Base) -> None:
    """Register an upload once its file is stored and checked, in a transaction of its own."""
    with sessions() as session, session.begin():
        session.add(row)


def get_model(session: Session, owner_id: str, model_id: str) -> Model:
    model = session.get(Model, model_id)
    if model is None or model.owner_id != owner_id:
        raise NotFound(f"no model {model_id}")
    return model


def list_models(session: Session, owner_id: str, *, limit: int, cursor: str | None) -> Page[Model]:
    statement = select(Model).where(Model.owner_id == owner_id)
    return keyset_page(session, statement, Model.id, limit=limit, cursor=cursor)


def _active_jobs(session: Session, *condition: ColumnElement[bool]) -> list[str]:
    statement = select(Job.id).where(Job.status.in_(ACTIVE_STATUSES), *condition).limit(5)
    return list(session.scalars(statement))


def _delete_unless_used(
    session: Session,
    store: ArtifactStore,
    row: Model | Dataset,
    *,
    what: str,
    used_by: ColumnElement[bool],
    prefix: str,
) -> None:
    """Delete `row` (a `what`), then its files under `prefix`; Conflict while a queued or
    running job matching `used_by` needs it."""
    active = _active_jobs(session, used_by)
    if active:
        raise Conflict(
            f"{what} {row.id} is used by unfinished jobs ({', '.join(active)}); "
            "cancel them or wait for them to end"
        )
    session.delete(row)
    session.commit()
    store.delete_prefix(prefix)


def delete_model(session: Session, store: ArtifactStore, owner_id: str, model_id: str) -> None:
    """Delete the row, then its file; Conflict while a queued or running job uses it."""
    model = get_model(session, owner_id, model_id)
    _delete_unless_used(
        session, store, model, what="model", used_by=Job.model_id == model_id,
        prefix=model_prefix(model_id),
    )  # fmt: skip


def model_prefix(model_id: str) -> str:
    return f"models/{model_id}"


def model_key(model_id: str) -> str:
    """Where a model's file lives in the artifact store (uploaded or produced by a job)."""
    return f"{model_prefix(model_id)}/model"


# -- datasets -------------------------------------------------------------------------------

DatasetEntry = Dataset | BuiltinDataset


def builtin_dataset(name: str) -> BuiltinDataset | None:
    return BUILTIN_DATASETS.get(name)


def get_dataset(session: Session, owner_id: str, dataset_id: str) -> DatasetEntry:
    builtin = builtin_dataset(dataset_id)
    if builtin is not None:
        return builtin
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.owner_id != owner_id:
        raise NotFound(f"no dataset {dataset_id}")
    return dataset


def list_datasets(
    session: Session, owner_id: str, *, limit: int, cursor: str | None
) -> Page[DatasetEntry]:
    """The builtins first (in a fixed order), then the owner's uploads, newest first."""
    after = decode_cursor(cursor)
    names = list(BUILTIN_DATASETS)
    items: list[DatasetEntry] = []
    if after is None or after in BUILTIN_DATASETS:
        start = 0 if after is None else names.index(after) + 1
        items.extend(BUILTIN_DATASETS[name] for name in names[start : start + limit + 1])
        after = None
    statement = select(Dataset).where(Dataset.owner_id == owner_id)
    if after is not None:
        statement = statement.where(Dataset.id < after)
    room = limit + 1 - len(items)
    if room > 0:
        items.extend(session.scalars(statement.order_by(Dataset.id.desc()).limit(room)))
    more = len(items) > limit
    items = items[:limit]
    next_cursor = encode_cursor(dataset_id(items[-1])) if more and items else None
    return Page(items=items, next_cursor=next_cursor)


def dataset_id(entry: DatasetEntry) -> str:
    return entry.name if isinstance(entry, BuiltinDataset) else entry.id


def delete_dataset(session: Session, store: ArtifactStore, owner_id: str, dataset_id: str) -> None:
    entry = get_dataset(session, owner_id, dataset_id)
    if isinstance(entry, BuiltinDataset):
        raise Conflict(f"{dataset_id} is a builtin dataset and cannot be deleted")
    _delete_unless_used(
        session, store, entry, what="dataset", used_by=Job.dataset == dataset_id,
        prefix=dataset_prefix(dataset_id),
    )  # fmt: skip


def dataset_prefix(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def check_dataset_fits(session: Session, owner_id: str, dataset: str, model: Model) -> None:
    """InvalidRequest (field `dataset`) unless the dataset exists for the owner and fits the
    model: the same input shape, and no more classes than the model has."""
    try:
        entry = get_dataset(session, owner_id, dataset)
    except NotFound as exc:
        raise InvalidRequest(
            f"no dataset {dataset!r}: use a builtin (e.g. builtin:digits) or the id of one "
            "of your uploaded datasets",
            field="dataset",
        ) from exc
    shape = list(entry.input_shape)
    if shape != list(model.input_shape):
        raise InvalidRequest(
            f"dataset {dataset} has images of shape {shape} but model {model.id} expects "
            f"{list(model.input_shape)}",
            field="dataset",
        )
    if entry.num_classes > model.num_classes:
        raise InvalidRequest(
            f"dataset {dataset} has {entry.num_classes} classes but model {model.id} only "
            f"{model.num_classes}",
            field="dataset",
        )


# -- jobs, events, checkpoints ----------------------------------------------------------------


def list_jobs(
    session: Session, owner_id: str, *, status: str | None, limit: int, cursor: str | None
) -> Page[Job]:
    statement = select(Job).where(Job.owner_id == owner_id)
    if status is not None:
        statement = statement.where(Job.status == status)
    return keyset_page(session, statement, Job.id, limit=limit, cursor=cursor)


def find_idempotent_job(session: Session, owner_id: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def list_events(session: Session, job_id: str, *, after: int, limit: int) -> list[JobEvent]:
    """Events in the order they happened (ids grow), after event id `after`."""
    return _job_rows_after(
        session, JobEvent, job_id, position=JobEvent.id, after=after, limit=limit
    )


def list_checkpoints(
    session: Session, job_id: str, *, after_epoch: int, limit: int
) -> Sequence[Checkpoint]:
    return _job_rows_after(
        session, Checkpoint, job_id, position=Checkpoint.epoch, after=after_epoch, limit=limit
    )


def _job_rows_after(
    session: Session,
    table: type[JobRow],
    job_id: str,
    *,
    position: InstrumentedAttribute[int],
    after: int,
    limit: int,
) -> list[JobRow]:
    """Up to `limit` of a job's rows of `table` whose `position` is past `after`, in order."""
    statement = (
        select(table)
        .where(table.job_id == job_id, position > after)
        .order_by(position)
        .limit(limit)
    )
    return list(session.scalars(statement))


def get_checkpoint(session: Session, job_id: str, epoch: int) -> Checkpoint:
    checkpoint = session.scalar(
        select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.epoch == epoch)
    )
    if checkpoint is None:
        raise NotFound(f"job {job_id} has no checkpoint for epoch {epoch}")
    return checkpoint


def weights_key_beside(checkpoint_key: str) -> str:
    """Where an epoch's weights, as a model file in the upload's format, sit beside its
    resumable checkpoint (`epoch-NNNN.pt` -> `epoch-NNNN.model`)."""
    return checkpoint_key.removesuffix(".pt") + ".model"


def checkpoint_model_key(checkpoint: Checkpoint) -> str:
    return weights_key_beside(checkpoint.storage_key)


def count_jobs_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: count for status, count in rows}
