"""Dependencies of the routes: the service context built by create_app, a DB session, the
owner behind the request's API key, the upload checker, and the paging parameters every list
shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.queue import JobQueue
from core.service.auth import authenticate
from core.service.catalog import MAX_PAGE
from core.service.context import ServiceContext
from core.service.sandbox.validation import FileChecker
from core.service.tables import Owner

# auto_error=False: a missing key is reported by core.service.auth, in the API's own error shape.
bearer = HTTPBearer(auto_error=False, description="an API key: `robustify keys create NAME`")


def get_context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


def get_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.queue
    return queue


def get_file_checker(request: Request) -> FileChecker:
    """The upload checker the app's startup made (its warm sandboxed children)."""
    checker: FileChecker = request.app.state.file_checker
    return checker


ContextDep = Annotated[ServiceContext, Depends(get_context)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
FileCheckerDep = Annotated[FileChecker, Depends(get_file_checker)]


def get_session(context: ContextDep) -> Iterator[Session]:
    """A session for the request; routes commit what they change, anything else rolls back."""
    with context.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_owner(
    context: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Owner:
    key = credentials.credentials if credentials is not None else None
    with context.sessions() as session:
        return authenticate(session, key)


OwnerDep = Annotated[Owner, Depends(get_owner)]

LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE, description="items per page")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=400, description="next_cursor of the previous page"),
]
