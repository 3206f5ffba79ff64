"""The delivery loop: a thread of the API process (beside the sweeper) that posts the outbox's
due deliveries, signed, and retries the failed ones with exponential backoff.

At least once: a delivery is claimed (its attempt counted, its next attempt pushed past the
time a post can take) in one transaction, posted, then marked in another; a process that dies
in between leaves it to be posted again, with the same event id, once the claim runs out. Every
API replica may run one: claims skip rows another replica holds (PostgreSQL's SKIP LOCKED).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core.service.config import Settings
from core.service.db import transaction
from core.service.errors import WebhookTargetRefused
from core.service.tables import WebhookDelivery, WebhookEndpoint, utcnow
from core.service.webhooks.outbox import DELIVERED, FAILED, PENDING
from core.service.webhooks.signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from core.service.webhooks.targets import check_target

log = logging.getLogger(__name__)

# Posts in flight at once per process: one receiver that is slow to answer delays no other.
DELIVERY_THREADS = 4
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
    factory: sessionmaker[Session], *, limit: int, hold_seconds: float, now: datetime
) -> list[Attempt]:
    """Take up to `limit` pending deliveries that are due, counting their attempt and holding
    them for `hold_seconds` (another claim skips them until then)."""
    with transaction(factory) as session:
        rows = session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
            .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        )
        attempts = []
        for delivery, endpoint in rows:
            delivery.attempts += 1
            delivery.next_attempt_at = now + timedelta(seconds=hold_seconds)
            attempts.append(
                Attempt(
                    delivery_id=delivery.id,
                    event_id=delivery.event_id,
                    event_type=delivery.event_type,
                    url=endpoint.url,
                    secret=endpoint.secret,
                    body=delivery.body,
                    attempt=delivery.attempts,
                )
            )
        return attempts


def post(client: httpx.Client, attempt: Attempt, *, allow_private: bool) -> Outcome:
    """POST the signed event to the address the endpoint's host resolves to now, if that is
    still allowed; never follows a redirect (a 3xx is a failed attempt)."""
    try:
        target = check_target(attempt.url, allow_private=allow_private)
    except WebhookTargetRefused as exc:
        return Outcome(status_code=None, error=f"refused: {exc.message}")
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
    extensions = {"sni_hostname": target.host} if target.parts.scheme == "https" else {}
    request = client.build_request(
        "POST", target.pinned_url, content=body, headers=headers, extensions=extensions
    )
    try:
        response = client.send(request, stream=True)  # the receiver's body is never read
        response.close()
    except httpx.HTTPError as exc:
        return Outcome(status_code=None, error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH])
    error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
    return Outcome(status_code=response.status_code, error=error)


def record_outcome(
    factory: sessionmaker[Session],
    attempt: Attempt,
    outcome: Outcome,
    *,
    settings: Settings,
    now: datetime,
) -> None:
    """Mark the delivery delivered, failed (out of attempts), or due again after its backoff.
    A delivery whose endpoint was deleted meanwhile is gone, and stays so."""
    with transaction(factory) as session:
        delivery = session.get(WebhookDelivery, attempt.delivery_id)
        if delivery is None or delivery.status != PENDING:
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
    """Every `webhook_poll_interval_seconds`, post what is due, until nothing is."""

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
            timeout=settings.webhook_timeout_seconds, follow_redirects=False, transport=transport
        )
        self.pool = ThreadPoolExecutor(DELIVERY_THREADS, thread_name_prefix="robustify-webhook")
        self.stopped = threading.Event()
        self.last_prune: float | None = None

    @property
    def hold_seconds(self) -> float:
        # Longer than a post can take (connect, write and read each bounded by the timeout).
        return 3 * self.settings.webhook_timeout_seconds + 5

    def deliver_due(self) -> int:
        """Post one batch of due deliveries (at most DELIVERY_THREADS at once); their count."""
        attempts = claim_due(
            self.factory, limit=DELIVERY_THREADS, hold_seconds=self.hold_seconds, now=utcnow()
        )
        list(self.pool.map(self._deliver, attempts))
        return len(attempts)

    def _deliver(self, attempt: Attempt) -> None:
        outcome = post(self.client, attempt, allow_private=self.settings.webhooks_allow_private)
        if not outcome.delivered:
            log.info(
                "webhook %s (%s) attempt %d: %s",
                attempt.delivery_id,
                attempt.event_type,
                attempt.attempt,
                outcome.error,
            )
        record_outcome(self.factory, attempt, outcome, settings=self.settings, now=utcnow())

    def run(self) -> None:
        while not self.stopped.wait(self.settings.webhook_poll_interval_seconds):
            try:
                while self.deliver_due() and not self.stopped.is_set():
                    pass
                if self.last_prune is None or time.monotonic() - self.last_prune >= PRUNE_SECONDS:
                    self.last_prune = time.monotonic()
                    prune_finished(self.factory, older_than=utcnow() - KEEP_FINISHED)
            except Exception:  # the database may be away for a moment; try again
                log.exception("webhook delivery failed")

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join()
        self.pool.shutdown(wait=True)
        self.client.close()
