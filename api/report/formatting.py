"""Numbers, times and settings as the report's HTML text; every text from the job escaped."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any


def compact_json(value: Any, indent: int = 0) -> str:
    """JSON with objects one key a line and lists of plain values on one line (the evaluation
    subset's hundreds of indices stay readable)."""
    pad = "  " * indent
    if isinstance(value, Mapping) and value:
        items = [
            f"{pad}  {json.dumps(str(key))}: {compact_json(item, indent + 1)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(item, Mapping | list) for item in value):
        items = [f"{pad}  {compact_json(item, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, default=str)


def key_values(rows: Sequence[tuple[str, str]]) -> str:
    """Rows of (label, already-escaped HTML) as a definition list; labels are escaped here."""
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def setting_value(value: Any) -> str:
    if value is None:
        return '<span class="muted">default</span>'
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | dict):
        return escape(json.dumps(value))
    return escape(str(value))


def with_interval(value: Any, bounds: tuple[float, float] | None) -> str:
    if bounds is None or not is_number(value):
        return percent(value)
    low, high = bounds
    return (
        f'{percent(value)} <span class="interval">[{low * 100:.1f}&ndash;{high * 100:.1f}]</span>'
    )


def plain_percent(value: Any) -> str:
    return f"{float(value) * 100:.1f}%" if is_number(value) else "?"


def plain_number(value: Any) -> str:
    return f"{float(value):.3g}" if is_number(value) else "?"


def image_count(value: Any) -> str:
    """1,000: a number of images."""
    return f"{int(value):,}" if is_number(value) else "?"


def percent(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return '<span class="muted">&ndash;</span>'
    return f"{value * 100:.1f}%"


def number(value: Any, digits: int = 3) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return '<span class="muted">&ndash;</span>'
    return f"{value:.{digits}g}"


def seconds(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return '<span class="muted">&ndash;</span>'
    return f"{value:.1f}"


def timestamp(value: datetime) -> str:
    return escape(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def css_word(text: str) -> str:
    return "".join(char for char in text.lower() if char.isalnum() or char == "-")


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_float(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
