"""A model put in the artifact store and the database as an accepted upload leaves it, without
the upload's sandboxed check (which starts a child that imports torch: seconds each). For the
tests of what is done with a model; the upload itself is tested in tests/api."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from core.service import auth, catalog
from core.service.context import ServiceContext
from core.service.ids import new_id
from core.service.tables import Model

DIGITS_INPUT = (1, 8, 8)


def register_digits_model(
    context: ServiceContext,
    owner_id: str,
    local: Path,
    *,
    name: str,
    format: str,
    architecture: str | None,
) -> Model:
    """The digits CNN file at `local` stored under a new model id for `owner_id`: its row."""
    model_id = new_id("mdl")
    key = catalog.model_key(model_id)
    stored = context.store.put_file(key, local)
    row = Model(
        id=model_id,
        owner_id=owner_id,
        name=name,
        format=format,
        architecture=architecture,
        input_shape=list(DIGITS_INPUT),
        num_classes=10,
        mean=None,
        std=None,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        storage_key=key,
        source_job_id=None,
        warnings=[],
    )
    catalog.insert_row(context.sessions, row)
    return row


def owner_with_a_bare_model(session: Session) -> tuple[str, Model]:
    """A new owner and a digits model row of theirs with no file behind it (flushed in
    `session`), for tests that read only the rows: dispatch, the webhook outbox."""
    owner_id = auth.create_key(session, owner_name=f"o-{new_id('own')[-6:]}").record.owner_id
    model = Model(
        id=new_id("mdl"),
        owner_id=owner_id,
        name="m",
        format="state_dict",
        architecture="builtin:digits_cnn",
        input_shape=list(DIGITS_INPUT),
        num_classes=10,
        sha256="0" * 64,
        size_bytes=1,
        storage_key="models/none",
        warnings=[],
    )
    session.add(model)
    session.flush()
    return owner_id, model
