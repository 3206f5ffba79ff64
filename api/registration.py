"""An upload registered: received into the store (api.uploads), checked on a local copy (in a
child process, by the route's check), then inserted as its row; a refused upload leaves
nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.uploads import ReceivedUpload, least_file_bytes, receive_upload
from core.service import catalog, limits
from core.service.context import ServiceContext
from core.service.storage import ArtifactStore
from core.service.tables import Base

Checked = TypeVar("Checked")
Row = TypeVar("Row", bound=Base)


async def store_checked_upload(
    request: Request,
    context: ServiceContext,
    *,
    owner_id: str,
    prefix: str,
    key_for: Callable[[str], str],
    max_bytes: int,
    check: Callable[[ReceivedUpload, Path], Checked],
    row_of: Callable[[ReceivedUpload, Checked], Row],
    check_fields: Callable[[ReceivedUpload], object] | None = None,
) -> Row:
    """Receive the upload into the store at `key_for(filename)` (inside `prefix`) while holding
    one of the owner's upload slots, run `check_fields` on its form fields (what needs no
    file: refused before a remote store pays for a local copy), then `check` on a local copy
    of it in a thread, and insert the row that `row_of` builds. The upload may be `max_bytes`
    at most, and no more than the owner's stored-bytes room: past the room a 429, past
    `max_bytes` a 413. Whatever fails on the way (a refusal, a disconnect) removes everything
    under `prefix` again."""
    allowance = await run_in_threadpool(
        limits.upload_allowance,
        context.sessions,
        owner_id,
        settings=context.settings,
        max_upload_bytes=max_bytes,
    )
    with allowance.refusing_past_it(least_file_bytes=least_file_bytes(request)):
        try:
            with request.app.state.upload_slots.take(owner_id):
                upload = await receive_upload(
                    request,
                    context.store,
                    key_for=key_for,
                    max_bytes=allowance.max_bytes,
                    idle_timeout_seconds=context.settings.upload_idle_timeout_seconds,
                )
                if check_fields is not None:
                    check_fields(upload)
                checked = await run_in_threadpool(
                    _check_stored, context.store, upload=upload, check=check
                )
            row = row_of(upload, checked)
            await run_in_threadpool(catalog.insert_row, context.sessions, row)
        except BaseException:
            context.store.delete_prefix(prefix)
            raise
    return row


def _check_stored(
    store: ArtifactStore,
    *,
    upload: ReceivedUpload,
    check: Callable[[ReceivedUpload, Path], Checked],
) -> Checked:
    with store.local_copy(upload.artifact.key) as path:
        return check(upload, path)
