"""An owner's webhook endpoints and their deliveries: create (the URL checked, a new secret),
show, list, delete; another owner's endpoint is not found."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.service.catalog import Page, keyset_page
from core.service.errors import Conflict, NotFound
from core.service.ids import new_id
from core.service.tables import WebhookDelivery, WebhookEndpoint
from core.service.webhooks.signing import new_secret
from core.service.webhooks.targets import check_target

MAX_ENDPOINTS_PER_OWNER = 20


def create_endpoint(
    session: Session,
    *,
    owner_id: str,
    url: str,
    events: Sequence[str],
    allow_private: bool,
) -> WebhookEndpoint:
    """A new endpoint with a new secret (the caller shows it once). The URL is checked first:
    WebhookTargetRefused names what is wrong with it."""
    check_target(url, allow_private=allow_private)
    count = session.scalar(select(func.count()).where(WebhookEndpoint.owner_id == owner_id))
    if (count or 0) >= MAX_ENDPOINTS_PER_OWNER:
        raise Conflict(
            f"an owner may have at most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints; "
            "delete one first"
        )
    endpoint = WebhookEndpoint(
        id=new_id("whk"),
        owner_id=owner_id,
        url=url,
        events=list(dict.fromkeys(events)),
        secret=new_secret(),
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(session: Session, owner_id: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.owner_id != owner_id:
        raise NotFound(f"no webhook {endpoint_id}")
    return endpoint


def list_endpoints(
    session: Session, owner_id: str, *, limit: int, cursor: str | None
) -> Page[WebhookEndpoint]:
    statement = select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner_id)
    return keyset_page(session, statement, WebhookEndpoint.id, limit=limit, cursor=cursor)


def delete_endpoint(session: Session, owner_id: str, endpoint_id: str) -> None:
    """Delete the endpoint and its outbox: nothing more is posted to it."""
    endpoint = get_endpoint(session, owner_id, endpoint_id)
    # The database cascades too; deleting here makes it so on SQLite without foreign keys.
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)


def list_deliveries(
    session: Session,
    owner_id: str,
    endpoint_id: str,
    *,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> Page[WebhookDelivery]:
    endpoint = get_endpoint(session, owner_id, endpoint_id)
    statement = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status is not None:
        statement = statement.where(WebhookDelivery.status == status)
    return keyset_page(session, statement, WebhookDelivery.id, limit=limit, cursor=cursor)
