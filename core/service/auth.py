"""Owners and API keys: random keys, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.service.errors import NotFound, Unauthorized
from core.service.ids import new_id
from core.service.tables import ApiKey, Owner, utcnow

KEY_PREFIX = "rk_"


def hash_key(key: str) -> str:
    # Keys are 256 random bits: a fast hash is enough (nothing to brute-force), and it lets
    # the lookup be one indexed equality.
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    key: str  # the secret, shown once
    record: ApiKey


def create_key(session: Session, *, owner_name: str, key_name: str = "default") -> CreatedKey:
    """A new key for `owner_name` (the owner is created on first use)."""
    owner = session.scalar(select(Owner).where(Owner.name == owner_name))
    if owner is None:
        owner = Owner(id=new_id("own"), name=owner_name)
        session.add(owner)
        session.flush()
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=new_id("key"),
        owner_id=owner.id,
        name=key_name,
        key_hash=hash_key(secret),
        prefix=secret[:10],
    )
    session.add(record)
    session.flush()
    return CreatedKey(key=secret, record=record)


def list_keys(session: Session) -> list[tuple[ApiKey, Owner]]:
    rows = session.execute(select(ApiKey, Owner).join(Owner).order_by(ApiKey.id))
    return [(key, owner) for key, owner in rows.tuples()]


def revoke_key(session: Session, key_id: str) -> ApiKey:
    record = session.get(ApiKey, key_id)
    if record is None:
        raise NotFound(f"no API key {key_id}")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
    return record


def authenticate(session: Session, key: str | None) -> Owner:
    """The owner of a live key; Unauthorized for none, an unknown or a revoked one."""
    if not key:
        raise Unauthorized("missing API key: send Authorization: Bearer <key>")
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if record is None or record.revoked_at is not None:
        raise Unauthorized("invalid or revoked API key")
    owner = session.get(Owner, record.owner_id)
    assert owner is not None  # the foreign key guarantees it
    return owner
