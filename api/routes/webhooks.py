"""/v1/webhooks: an owner's endpoints for signed job state notifications (create, list, show,
delete) and each endpoint's deliveries. The secret is answered once, at creation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import ContextDep, CursorQuery, LimitQuery, OwnerDep, SessionDep
from api.schemas.common import ID_PATTERN, Page
from api.schemas.webhooks import (
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookOut,
)
from core.service.webhooks import endpoints

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookId = Annotated[str, Path(max_length=40, pattern=ID_PATTERN)]


@router.post(
    "",
    status_code=201,
    summary="Create a webhook endpoint",
    responses={
        409: {"description": "this owner already has the most endpoints allowed"},
        503: {"description": "the URL's host could not be resolved just now; retry"},
    },
)
def create_webhook(
    body: WebhookCreate, owner: OwnerDep, session: SessionDep, context: ContextDep
) -> WebhookCreated:
    """Post the chosen job state changes to `url`, each signed with the `secret` answered here
    (and never again). A URL that is not http(s) or whose host is, or resolves to, a loopback,
    private, link-local, multicast or reserved address is a 422 (`webhook_target_refused`); a
    host that does not resolve is a 422 too, one the resolver failed on for now a 503."""
    endpoint = endpoints.create_endpoint(
        session,
        owner_id=owner.id,
        url=body.url,
        events=body.events,
        allow_private=context.settings.webhooks_allow_private,
    )
    session.commit()
    return WebhookCreated.of(endpoint)


@router.get("", summary="List your webhook endpoints")
def list_webhooks(
    owner: OwnerDep, session: SessionDep, limit: LimitQuery = 20, cursor: CursorQuery = None
) -> Page[WebhookOut]:
    page = endpoints.list_endpoints(session, owner.id, limit=limit, cursor=cursor)
    return Page(items=[WebhookOut.of(row) for row in page.items], next_cursor=page.next_cursor)


@router.get("/{webhook_id}", summary="Show a webhook endpoint (without its secret)")
def show_webhook(webhook_id: WebhookId, owner: OwnerDep, session: SessionDep) -> WebhookOut:
    return WebhookOut.of(endpoints.get_endpoint(session, owner.id, webhook_id))


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook endpoint")
def delete_webhook(webhook_id: WebhookId, owner: OwnerDep, session: SessionDep) -> Response:
    """Delete the endpoint and its pending deliveries: nothing more is posted to it."""
    endpoints.delete_endpoint(session, owner.id, webhook_id)
    session.commit()
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", summary="List an endpoint's deliveries, newest first")
def list_deliveries(
    webhook_id: WebhookId,
    owner: OwnerDep,
    session: SessionDep,
    status: DeliveryStatus | None = None,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[WebhookDeliveryOut]:
    page = endpoints.list_deliveries(
        session, owner.id, webhook_id, status=status, limit=limit, cursor=cursor
    )
    return Page(
        items=[WebhookDeliveryOut.of(row) for row in page.items], next_cursor=page.next_cursor
    )
