"""Prefixed, time-sortable identifiers (`mdl_…`, `job_…`): sorting by id sorts by creation."""

from __future__ import annotations

import secrets
import time


def new_id(prefix: str) -> str:
    """`<prefix>_` + 12 hex digits of milliseconds + 10 random hex digits."""
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(5)}"
