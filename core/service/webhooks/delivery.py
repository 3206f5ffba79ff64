"""The delivery loop: a thread of the API process (beside the sweeper) that posts the outbox's
due deliveries, signed, and retries the failed ones with exponential backoff.

At least once: a delivery is claimed (its attempt counted, its next attempt pushed past the
time a post can take) in one transaction, posted, then marked in another; a process that dies
in between leaves it to be posted again, with the same event id, once the claim runs out (or
failed, when that was its last attempt). Every API replica may run one: claims skip rows
another replica holds (PostgreSQL's SKIP LOCKED).

The pool is fed continuously: a post that ends frees its thread for the next due delivery at
once, each post has an overall deadline (core.service.webhooks.deadline), and one endpoint has
at most one post in flight per process, so a slow receiver delays only its own deliveries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core.service.config import Settings
from core.service.db import transaction
from core.service.errors import WebhookTargetRefused
from core.service.tables import WebhookDelivery, WebhookEndpoint, utcnow
from core.service.webhooks.deadline import PostDeadline
from core.service.webhooks.outbox import DELIVERED, FAILED, PENDING
from core.service.webhooks.signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from core.service.webhooks.targets import check_target

log = logging.getLogger(__name__)

# Posts in flight at once per process (at most one per endpoint).
DELIVERY_THREADS = 4
# Due rows read per free thread, so that one endpoint's backlog still leaves others to claim.
CANDIDATES_PER_THREAD = 5
USER_AGENT = "robustify-webhooks/1"
MAX_ERROR_LENGTH = 500
# Delivered and failed deliveries are kept this long (listed at /v1/webhooks/{id}/deliveries),
# then deleted; pruned at most this often.
KEEP_FINISHED = timedelta(days=30)
PRUNE_SECONDS = 3600.0


@dataclass(frozen=True)
class Attempt:
    """A claimed delivery: what to post, where, and with which secret."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: str
    url: str
    secret: str
    body: str
    attempt: int


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def backoff_seconds(settings: Settings, attempt: int) -> float:
    """How long after its `attempt`-th failure a delivery is tried again."""
    exponent = min(attempt - 1, 60)
    return float(
        min(settings.webhook_backoff_seconds * 2**exponent, settings.webhook_max_backoff_seconds)
    )


def claim_due(
    factory: sessionmaker[Session],
    *,
    limit: int,
    hold_seconds: float,
    max_attempts: int,
    now: datetime,
    busy_endpoints: Collection[str] = (),
) -> list[Attempt]:
    """Take up to `limit` pending deliveries that are due, at most one per endpoint and none of
    `busy_endpoints` (posts in flight), counting their attempt and holding them for
    `hold_seconds` (another claim skips them until then). A due row already at `max_attempts`
    (its last attempt left no outcome: the process posting it died) is failed, not claimed."""
    with transaction(factory) as session:
        _fail_exhausted(session, max_attempts=max_attempts, now=now)
        statement = (
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
            .where(
                WebhookDelivery.status == PENDING,
                WebhookDelivery.next_attempt_at <= now,
                WebhookDelivery.attempts < max_attempts,
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit * CANDIDATES_PER_THREAD)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        )
        if busy_endpoints:
            statement = statement.where(WebhookDelivery.endpoint_id.not_in(busy_endpoints))
        attempts: list[Attempt] = []
        taken: set[str] = set()
        for delivery, endpoint in session.execute(statement):
            if len(attempts) == limit:
                break
            if endpoint.id in taken:
                continue  # its next delivery waits for this one's post
            taken.add(endpoint.id)
            delivery.attempts += 1
            delivery.next_attempt_at = now + timedelta(seconds=hold_seconds)
            attempts.append(
                Attempt(
                    delivery_id=delivery.id,
                    endpoint_id=endpoint.id,
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                    url=endpoint.url,
                    secret=endpoint.secret,
                    body=delivery.body,
                    attempt=delivery.attempts,
                )
            )
        return attempts


def _fail_exhausted(session: Session, *, max_attempts: int, now: datetime) -> None:
    exhausted = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
            WebhookDelivery.attempts >= max_attempts,
        )
        .with_for_update(skip_locked=True)
    )
    for delivery in exhausted:
        delivery.status = FAILED
        delivery.last_status_code = None
        delivery.last_error = (
            f"attempt {delivery.attempts} left no outcome (the process posting it stopped); "
            f"out of attempts ({max_attempts})"
        )


def post(
    client: httpx.Client,
    attempt: Attempt,
    *,
    allow_private: bool,
    deadline_seconds: float | None = None,
) -> Outcome:
    """POST the signed event to the address the endpoint's host resolves to now, if that is
    still allowed; never follows a redirect (a 3xx is a failed attempt). With
    `deadline_seconds`, the whole post (connect, send, the answer's headers) ends by then.
    Never raises: whatever goes wrong is the attempt's outcome."""
    try:
        target = check_target(attempt.url, allow_private=allow_private)
    except WebhookTargetRefused as exc:
        return Outcome(status_code=None, error=f"refused: {exc.message}")
    except Exception as exc:  # a resolver that failed for now, ...: this attempt failed
        return Outcome(status_code=None, error=_described(exc))
    body = attempt.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": target.host_header,
        SIGNATURE_HEADER: signature_header(attempt.secret, timestamp=int(time.time()), body=body),
        EVENT_ID_HEADER: attempt.event_id,
        EVENT_TYPE_HEADER: attempt.event_type,
    }
    # Connect to the checked address, not to a second resolution of the name (DNS rebinding);
    # TLS still names, and verifies the certificate of, the URL's host.
    extensions: dict[str, object] = (
        {"sni_hostname": target.host} if target.parts.scheme == "https" else {}
    )
    deadline = PostDeadline(deadline_seconds) if deadline_seconds is not None else None
    if deadline is not None:
        extensions["trace"] = deadline.trace
    try:
        request = client.build_request(
            "POST", target.pinned_url, content=body, headers=headers, extensions=extensions
        )
        if deadline is None:
            response = client.send(request, stream=True)
        else:
            with deadline:
                response = client.send(request, stream=True)
        response.close()  # the receiver's body is never read
    except Exception as exc:  # httpx's errors, and any other (InvalidURL is not an HTTPError)
        if deadline is not None and deadline.expired:
            return Outcome(status_code=None, error=f"no answer within {deadline.seconds:g} s")
        return Outcome(status_code=None, error=_described(exc))
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return Outcome(status_code=response.status_code, error=error)


def _described(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


def record_outcome(
    factory: sessionmaker[Session],
    attempt: Attempt,
    outcome: Outcome,
    *,
    settings: Settings,
    now: datetime,
) -> None:
    """Mark the delivery delivered, failed (out of attempts), or due again after its backoff.
    A delivery whose endpoint was deleted meanwhile is gone, and stays so; one claimed again
    since (this attempt outlived its hold) is the later attempt's to mark."""
    with transaction(factory) as session:
        delivery = session.get(WebhookDelivery, attempt.delivery_id)
        if delivery is None or delivery.status != PENDING or delivery.attempts != attempt.attempt:
            return
        delivery.last_status_code = outcome.status_code
        delivery.last_error = outcome.error
        if outcome.delivered:
            delivery.status, delivery.delivered_at = DELIVERED, now
        elif delivery.attempts >= settings.webhook_max_attempts:
            delivery.status = FAILED
        else:
            delay = backoff_seconds(settings, delivery.attempts)
            delivery.next_attempt_at = now + timedelta(seconds=delay)


def prune_finished(factory: sessionmaker[Session], *, older_than: datetime) -> int:
    """Delete the delivered and failed deliveries created before `older_than`; their count."""
    with transaction(factory) as session:
        result = session.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.status != PENDING, WebhookDelivery.created_at < older_than
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


class WebhookDeliverer(threading.Thread):
    """Keeps up to DELIVERY_THREADS posts in flight: claims due deliveries as threads free up,
    polling every `webhook_poll_interval_seconds` when none are due; prunes old ones hourly."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(name="robustify-webhooks", daemon=True)
        self.factory, self.settings = factory, settings
        self.client = httpx.Client(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            transport=transport,
            trust_env=False,  # no proxy from the environment: posts go to the checked address
            # A connection per post: the post's deadline watches the sockets it opens.
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.pool = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="robustify-webhook")
        self.stopped = threading.Event()
        self.wake = threading.Event()  # a post ended: its thread and its endpoint are free
        self.in_flight: set[str] = set()  # the endpoints being posted to
        self.lock = threading.Lock()
        self.last_prune: float | None = None

    @property
    def deadline_seconds(self) -> float:
        """The most a post may take in all (httpx's timeout bounds each read or write)."""
        return self.settings.webhook_timeout_seconds

    @property
    def hold_seconds(self) -> float:
        # Longer than a post can take (its DNS check, then its deadline) and its outcome's
        # recording: no other claim takes the delivery meanwhile.
        return 3 * self.deadline_seconds + 5

    def start_due(self) -> int:
        """Start posting due deliveries, as many as there are free threads; their count."""
        with self.lock:
            busy = set(self.in_flight)
        free = DELIVERY_THREADS - len(busy)
        if free <= 0:
            return 0
        attempts = claim_due(
            self.factory,
            limit=free,
            hold_seconds=self.hold_seconds,
            max_attempts=self.settings.webhook_max_attempts,
            now=utcnow(),
            busy_endpoints=busy,
        )
        for attempt in attempts:
            with self.lock:
                self.in_flight.add(attempt.endpoint_id)
            future = self.pool.submit(self._deliver, attempt)
            future.add_done_callback(self._finished_callback(attempt.endpoint_id))
        return len(attempts)

    def _finished_callback(self, endpoint_id: str) -> Callable[[Future[None]], None]:
        def finished(_future: Future[None]) -> None:
            with self.lock:
                self.in_flight.discard(endpoint_id)
            self.wake.set()

        return finished

    def _deliver(self, attempt: Attempt) -> None:
        outcome = post(
            self.client,
            attempt,
            allow_private=self.settings.webhooks_allow_private,
            deadline_seconds=self.deadline_seconds,
        )
        if not outcome.delivered:
            log.info(
                "webhook %s (%s) attempt %d: %s",
                attempt.delivery_id,
                attempt.event_type,
                attempt.attempt,
                outcome.error,
            )
        try:
            record_outcome(self.factory, attempt, outcome, settings=self.settings, now=utcnow())
        except Exception:  # the row stays held; it is claimed again (or failed) after its hold
            log.exception("webhook %s: its outcome was not recorded", attempt.delivery_id)

    def prune_when_due(self) -> None:
        if self.last_prune is None or time.monotonic() - self.last_prune >= PRUNE_SECONDS:
            self.last_prune = time.monotonic()
            prune_finished(self.factory, older_than=utcnow() - KEEP_FINISHED)

    def run(self) -> None:
        while not self.stopped.is_set():
            self.wake.clear()
            started = 0
            try:
                self.prune_when_due()
                started = self.start_due()
            except Exception:  # the database may be away for a moment; try again
                log.exception("webhook delivery failed")
            if not started:  # nothing due (or no free thread): until a post ends, or a poll
                self.wake.wait(self.settings.webhook_poll_interval_seconds)

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
        if self.is_alive():
            self.join()
        self.pool.shutdown(wait=True)
        self.client.close()
