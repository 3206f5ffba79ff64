"""The Range header of a download (RFC 9110, section 14): byte ranges as [start, end) spans,
merged where they overlap. Our own parser, so that the answers do not hang on a framework's
private method."""

from __future__ import annotations

MAX_RANGES = 100  # more than this is not a download but a way to make us work: served whole


class MalformedRange(ValueError):
    """A Range header that does not say which bytes it wants."""


class UnsatisfiableRange(ValueError):
    """A Range header whose every range lies outside the file."""


def parse_byte_ranges(header: str, size: int) -> list[tuple[int, int]]:
    """The [start, end) spans `header` asks of a file of `size` bytes, sorted and merged; []
    when it asks for more than MAX_RANGES (the whole file is served). A range that starts
    past the end is dropped, as the RFC says; when none is left, UnsatisfiableRange."""
    unit, equals, specs = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        raise MalformedRange("only byte ranges are served (bytes=start-end)")
    parts = [part.strip() for part in specs.split(",") if part.strip()]
    if not parts:
        raise MalformedRange("the header names no range")
    if len(parts) > MAX_RANGES:
        return []
    spans = [span for span in (_span(part, size) for part in parts) if span is not None]
    if not spans:
        raise UnsatisfiableRange(f"no range lies inside the file ({size} bytes)")
    return _merged(spans)


def _span(spec: str, size: int) -> tuple[int, int] | None:
    """One `first-last`, `first-` or `-suffix` as [start, end); None when it lies outside."""
    first, dash, last = (piece.strip() for piece in spec.partition("-"))
    if not dash or not (first or last) or not all(p.isdigit() for p in (first, last) if p):
        raise MalformedRange(f"cannot read the range {spec!r}")
    if not first:  # the last `last` bytes
        suffix = int(last)
        return (max(size - suffix, 0), size) if suffix > 0 and size > 0 else None
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if last and int(last) < start:
        raise MalformedRange(f"the range {spec!r} ends before it starts")
    return (start, end) if start < size else None


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    spans = sorted(spans)
    merged = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged
