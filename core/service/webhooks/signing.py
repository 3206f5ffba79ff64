"""The signature on every delivery: `Robustify-Signature: t=<unix seconds>,v1=<hex>`, where the
hex is HMAC-SHA256, keyed by the endpoint's secret, of "<t>.<body>". The timestamp inside the
signed text lets a receiver refuse an old delivery replayed at it (the SDK's
`robustify.webhooks.verify_signature` checks both)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Robustify-Signature"
EVENT_ID_HEADER = "Robustify-Event-Id"
EVENT_TYPE_HEADER = "Robustify-Event-Type"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, *, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of "<timestamp>.<body>" keyed by `secret`."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, *, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp=timestamp, body=body)}"
