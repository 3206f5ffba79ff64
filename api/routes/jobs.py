"""/v1/jobs: create (idempotent with Idempotency-Key), list, show, cancel, events (paged JSON
or a live SSE stream), checkpoints and their model files.

The database is the job's truth; the broker message only says "look at job X". A job whose
message cannot be sent now stays queued and is sent again by the sweeper.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.types import Receive, Scope, Send

from api.deps import ContextDep, CursorQuery, LimitQuery, OwnerDep, QueueDep, SessionDep
from api.downloads import artifact_download
from api.queue import JobQueue
from api.schemas import (
    ID_PATTERN,
    MAX_EPSILON,
    CheckpointOut,
    ErrorBody,
    EventOut,
    JobCreate,
    JobOut,
    JobStatus,
    Page,
)
from api.slots import OwnerSlots, Slot
from core.service import catalog, limits
from core.service.broker import world_size_of
from core.service.context import ServiceContext
from core.service.errors import InvalidRequest, NotFound
from core.service.jobs import jobconfig, lifecycle
from core.service.jobs.lifecycle import TERMINAL
from core.service.tables import Job

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(max_length=40, pattern=ID_PATTERN)]
SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0
EVENTS_PAGE = 500
# Database polls of all live streams at once, per API process (each holds a connection briefly).
EVENT_POLLS_AT_ONCE = 4


@router.post(
    "",
    status_code=202,
    summary="Create a job",
    responses={
        200: {"model": JobOut, "description": "an Idempotency-Key replay"},
        429: {
            "model": ErrorBody,
            "description": "this owner has `max_queued_jobs_per_owner` jobs queued, or (a "
            "harden job) its stored bytes have reached `max_stored_bytes_per_owner`",
        },
    },
)
def create_job(
    body: JobCreate,
    owner: OwnerDep,
    session: SessionDep,
    context: ContextDep,
    queue: QueueDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$"),
    ] = None,
) -> JobOut:
    """Queue a harden or evaluate job (202). Retrying with the same Idempotency-Key and body
    returns the job the first request made (200); the same key with another body is a 409.
    Past the owner's queued-jobs limit (or, for a harden job, its stored-bytes limit) a new
    job is a 429 with Retry-After; a replay is answered all the same."""
    config = body.normalized_config()
    request_hash = _request_hash(body, config)
    if idempotency_key is not None:
        existing = catalog.find_idempotent_job(session, owner.id, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash, response)
    _check_job(session, owner.id, body, config)
    if idempotency_key is not None:
        # A retry racing its first request waits here for the first one's commit, then answers
        # its job instead of counting that job against the queued limit.
        limits.lock_owner(session, owner.id)
        existing = catalog.find_idempotent_job(session, owner.id, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash, response)
    limits.check_may_queue(session, owner.id, settings=context.settings)
    if body.kind == "harden":
        limits.check_may_store(session, owner.id, settings=context.settings)
    try:
        job, created = lifecycle.create_job(
            session,
            owner_id=owner.id,
            kind=body.kind,
            model_id=body.model_id,
            dataset=body.dataset,
            config=config,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        session.commit()
    except IntegrityError:
        # Two retries raced with one key: the other one made the job.
        session.rollback()
        existing = catalog.find_idempotent_job(session, owner.id, idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, request_hash, response)
    if not created:
        return _replay(job, request_hash, response)
    log.info("job %s created (%s)", job.id, job.kind, extra={"job_id": job.id})
    _enqueue(queue, job.id, world_size=world_size_of(job.config))
    return JobOut.of(job)


def _request_hash(body: JobCreate, config: dict[str, Any]) -> str:
    canonical = {"kind": body.kind, "model_id": body.model_id, "dataset": body.dataset, **config}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _replay(job: Job, request_hash: str, response: Response) -> JobOut:
    lifecycle.check_replay(job, request_hash)
    response.status_code = 200
    response.headers["Idempotent-Replayed"] = "true"
    return JobOut.of(job)


def _check_job(session: Session, owner_id: str, body: JobCreate, config: dict[str, Any]) -> None:
    try:
        model = catalog.get_model(session, owner_id, body.model_id)
    except NotFound as exc:
        raise InvalidRequest(f"no model {body.model_id}", field="model_id") from exc
    catalog.check_dataset_fits(session, owner_id, body.dataset, model)
    norm = body.threat_model.norm
    for index, epsilon in enumerate(body.evaluation.epsilons or []):
        if epsilon > MAX_EPSILON[norm]:
            field = f"evaluation.epsilons[{index}]"
            raise InvalidRequest(
                f"{field}: a {norm} epsilon must be at most {MAX_EPSILON[norm]:g}, got {epsilon}",
                field=field,
            )
    # The engine's own checks, so a config the worker would refuse is refused here, now.
    jobconfig.threat_model(config)
    jobconfig.finetune_config(config)
    jobconfig.evaluation_settings(config)


def _enqueue(queue: JobQueue, job_id: str, *, world_size: int) -> None:
    try:
        queue.enqueue(job_id, world_size=world_size)
    except Exception:  # the job is safe in the DB: the sweeper sends it again later
        log.exception(
            "job %s: could not reach the broker; the sweeper will enqueue it",
            job_id,
            extra={"job_id": job_id},
        )


@router.get("", summary="List your jobs")
def list_jobs(
    owner: OwnerDep,
    session: SessionDep,
    status: JobStatus | None = None,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[JobOut]:
    page = catalog.list_jobs(session, owner.id, status=status, limit=limit, cursor=cursor)
    return Page(items=[JobOut.of(job) for job in page.items], next_cursor=page.next_cursor)


@router.get("/{job_id}", summary="Show a job: status, progress, metrics, result")
def show_job(job_id: JobId, owner: OwnerDep, session: SessionDep) -> JobOut:
    return JobOut.of(lifecycle.get_job(session, owner.id, job_id))


@router.post("/{job_id}/cancel", status_code=202, summary="Cancel a job")
def cancel_job(job_id: JobId, owner: OwnerDep, session: SessionDep) -> JobOut:
    """A queued job is cancelled at once; a running one stops at its next batch, after its
    checkpoint (cancel_requested until then). An ended job is a 409."""
    job = lifecycle.request_cancel(session, owner_id=owner.id, job_id=job_id)
    session.commit()
    return JobOut.of(job)


# -- events ---------------------------------------------------------------------------------


class EventStreams:
    """The live event streams of one API process: at most `per_owner` open per owner, and
    their polls of the database run EVENT_POLLS_AT_ONCE at a time, each with a short-lived
    session, so however many streams are open they hold no connection while they wait and
    take no more than a few of the pool's connections and the threadpool's threads."""

    def __init__(self, *, per_owner: int) -> None:
        self.slots = OwnerSlots(
            per_owner=per_owner,
            what="live event streams open",
            code="too_many_streams",
            retry_after_seconds=10,
        )
        self.polls = CapacityLimiter(EVENT_POLLS_AT_ONCE)


class _EventStreamResponse(StreamingResponse):
    """An SSE response that gives its stream slot back however it ends: the job ended, the
    client went away (Starlette cancels the body), or the first send failed before the body
    was ever started (a generator's own `finally` would not run then)."""

    def __init__(self, body: AsyncIterator[str], slot: Slot) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


@router.get(
    "/{job_id}/events",
    summary="A job's events: paged JSON, or a live stream with Accept: text/event-stream",
    response_model=Page[EventOut],
    responses={
        200: {"content": {"text/event-stream": {}}},
        429: {
            "model": ErrorBody,
            "description": "this owner already has `max_event_streams_per_owner` live streams",
        },
    },
)
def job_events(
    job_id: JobId,
    request: Request,
    owner: OwnerDep,
    context: ContextDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="the last event id seen")] = 0,
    limit: LimitQuery = 100,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=40, include_in_schema=False)
    ] = None,
) -> Any:
    """Paged JSON, or with `Accept: text/event-stream` every event after `after` (or
    Last-Event-ID) as it is written, until the job has ended. A stream holds no database
    connection while it waits; an owner may keep `max_event_streams_per_owner` open (429)."""
    wants_stream = "text/event-stream" in request.headers.get("accept", "")
    # A session of its own, closed before any stream starts (a SessionDep would live as long
    # as the response, holding a pooled connection for the stream's whole life).
    with context.sessions() as session:
        job = lifecycle.get_job(session, owner.id, job_id)
        if not wants_stream:
            events = catalog.list_events(session, job.id, after=after, limit=limit + 1)
            more = len(events) > limit
            events = events[:limit]
            return Page(
                items=[EventOut.of(event) for event in events],
                next_cursor=str(events[-1].id) if more and events else None,
            )
    start = _last_event_id(last_event_id, after)
    streams: EventStreams = request.app.state.event_streams
    slot = streams.slots.acquire(owner.id)
    return _EventStreamResponse(_event_stream(request, context, streams, job.id, start), slot)


def _last_event_id(header: str | None, after: int) -> int:
    if header is None:
        return after
    if not header.strip().isdigit():
        raise InvalidRequest("Last-Event-ID must be an event id", field="Last-Event-ID")
    return int(header.strip())


def _poll_events(context: ServiceContext, job_id: str, after: int) -> tuple[list[EventOut], bool]:
    with context.sessions() as session:
        # The status is read first: events written before it are then surely in this read.
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        events = catalog.list_events(session, job_id, after=after, limit=EVENTS_PAGE)
        return [EventOut.of(event) for event in events], status in TERMINAL or status is None


def _sse(event: EventOut) -> str:
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"


async def _event_stream(
    request: Request, context: ServiceContext, streams: EventStreams, job_id: str, after: int
) -> AsyncIterator[str]:
    """Every event after `after`, as it is written, until the job has ended."""
    yield "retry: 2000\n\n"
    loop = asyncio.get_running_loop()
    last_sent = loop.time()
    while True:
        events, ended = await to_thread.run_sync(
            _poll_events, context, job_id, after, limiter=streams.polls
        )
        for event in events:
            yield _sse(event)
            after = event.id
        if events:
            last_sent = loop.time()
        if ended and len(events) < EVENTS_PAGE:
            return
        if await request.is_disconnected():
            return
        if loop.time() - last_sent > SSE_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = loop.time()
        if len(events) < EVENTS_PAGE:
            await asyncio.sleep(SSE_POLL_SECONDS)


# -- checkpoints ----------------------------------------------------------------------------


@router.get("/{job_id}/checkpoints", summary="Per-epoch checkpoints with validation metrics")
def job_checkpoints(
    job_id: JobId,
    owner: OwnerDep,
    session: SessionDep,
    limit: LimitQuery = 100,
    cursor: Annotated[str | None, Query(max_length=10, pattern=r"^\d+$")] = None,
) -> Page[CheckpointOut]:
    job = lifecycle.get_job(session, owner.id, job_id)
    after_epoch = int(cursor) if cursor is not None else 0
    rows = list(catalog.list_checkpoints(session, job.id, after_epoch=after_epoch, limit=limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=[CheckpointOut.of(row) for row in rows],
        next_cursor=str(rows[-1].epoch) if more and rows else None,
    )


@router.get(
    "/{job_id}/checkpoints/{epoch}/content",
    summary="Download an epoch's weights, in the uploaded model's format",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def checkpoint_content(
    job_id: JobId,
    epoch: Annotated[int, Path(ge=1, le=100_000)],
    request: Request,
    owner: OwnerDep,
    session: SessionDep,
    context: ContextDep,
) -> Response:
    job = lifecycle.get_job(session, owner.id, job_id)
    checkpoint = catalog.get_checkpoint(session, job.id, epoch)
    key = catalog.checkpoint_model_key(checkpoint)
    stat = context.store.stat(key)
    if stat is None:
        raise NotFound(f"job {job.id} has no model file for epoch {epoch}")
    # Each attempt writes its own keys, once: its size and time name its version.
    written = int(stat.modified.timestamp() * 1_000_000)
    return artifact_download(
        request,
        context.store,
        key,
        etag=f'W/"{stat.size_bytes:x}-{written:x}"',
        filename=f"{job.id}-epoch-{epoch:04d}.model",
    )
