"""The SDK's receiver-side check of a delivery's signature, against what the service signs."""

from __future__ import annotations

import json

import pytest

from core.service.webhooks.signing import signature_header
from robustify.webhooks import WebhookSignatureError, verify_signature

SECRET = "whsec_receiver-test"
BODY = json.dumps({"id": "evt_1", "type": "job.succeeded", "data": {"job": {"id": "job_1"}}})
NOW = 1_800_000_000


def header(*, secret: str = SECRET, timestamp: int = NOW, body: str = BODY) -> str:
    return signature_header(secret, timestamp=timestamp, body=body.encode())


def test_a_signed_delivery_verifies_and_gives_the_event():
    event = verify_signature(BODY.encode(), header(), secret=SECRET, now=NOW + 10)
    assert event["id"] == "evt_1" and event["type"] == "job.succeeded"


@pytest.mark.parametrize(
    ("signed", "why"),
    [
        (header(secret="whsec_someone-else"), "does not match"),
        (header(body=BODY.replace("succeeded", "failed")), "does not match"),
        (header(timestamp=NOW - 301), "tolerance"),
        (header(timestamp=NOW + 301), "tolerance"),
        ("v1=abc", "malformed"),
        ("t=123", "malformed"),
        ("t=\u00b2,v1=abc", "malformed"),  # a superscript two: isdigit, not int
        (f"t={NOW},v1=\u00e9", "malformed"),  # compare_digest takes ASCII text only
        ("", "no Robustify-Signature"),
        (None, "no Robustify-Signature"),
    ],
)
def test_a_wrong_or_stale_signature_is_refused(signed: str | None, why: str):
    with pytest.raises(WebhookSignatureError, match=why):
        verify_signature(BODY, signed, secret=SECRET, now=NOW)


def test_a_changed_timestamp_breaks_the_signature():
    original = header()
    moved = original.replace(f"t={NOW}", f"t={NOW + 5}")
    with pytest.raises(WebhookSignatureError, match="does not match"):
        verify_signature(BODY, moved, secret=SECRET, now=NOW)


def test_the_tolerance_can_be_widened():
    old = header(timestamp=NOW - 3600)
    assert verify_signature(BODY, old, secret=SECRET, now=NOW, tolerance_seconds=7200)["id"]
