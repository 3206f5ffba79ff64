"""Checking, in a receiver, that a webhook delivery came from robustify: the
`Robustify-Signature: t=<unix seconds>,v1=<hex>` header is HMAC-SHA256, keyed by the
endpoint's secret, of "<t>.<raw body>", and `t` is recent (an old delivery replayed is refused).

```python
from robustify.webhooks import WebhookSignatureError, verify_signature

def receive(raw_body: bytes, headers: dict[str, str]) -> None:
    try:
        event = verify_signature(raw_body, headers["Robustify-Signature"], secret=SECRET)
    except WebhookSignatureError:
        return  # answer 400: not from robustify, or too old
    if seen(event["id"]):  # at least once: the same event id may come again
        return
    handle(event["type"], event["data"]["job"])
```
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from robustify.errors import RobustifyError

SIGNATURE_HEADER = "Robustify-Signature"
EVENT_ID_HEADER = "Robustify-Event-Id"
DEFAULT_TOLERANCE_SECONDS = 300.0


class WebhookSignatureError(RobustifyError):
    """The delivery's signature is missing, malformed, wrong, or too old."""


def verify_signature(
    body: bytes | str,
    header: str | None,
    *,
    secret: str,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The event (the parsed body) if `header` signs `body` with `secret` and its timestamp is
    within `tolerance_seconds` of `now` (default: the clock); WebhookSignatureError if not.

    Pass the raw body exactly as received, before any JSON parsing."""
    raw = body.encode() if isinstance(body, str) else body
    timestamp, signatures = _parse_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookSignatureError(
            f"the signature's timestamp is {abs(current - timestamp):.0f} s away from now "
            f"(tolerance {tolerance_seconds:g} s)"
        )
    expected = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + raw, hashlib.sha256
    ).hexdigest()
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise WebhookSignatureError("the signature does not match the body and secret")
    try:
        event: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise WebhookSignatureError("the signed body is not JSON") from exc
    return event


def _parse_header(header: str | None) -> tuple[int, list[str]]:
    """(t, [v1 signatures]) of a `t=<unix>,v1=<hex>` header."""
    if not header:
        raise WebhookSignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        # ASCII only: str.isdigit accepts "²" (int() then raises) and compare_digest refuses
        # a non-ASCII str; either is a malformed header, not a crash.
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            if not value.isascii():
                raise WebhookSignatureError(
                    f"malformed {SIGNATURE_HEADER} header: {header[:100]!r}"
                )
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header: {header[:100]!r}")
    return timestamp, signatures
