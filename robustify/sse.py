"""A server-sent events reader: the lines of a text/event-stream body into messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseMessage:
    id: str | None
    event: str
    data: str


def read_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """Messages as the SSE spec builds them: fields until a blank line; comments skipped."""
    event_id: str | None = None
    event = ""
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(id=event_id, event=event or "message", data="\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):  # a comment: the server's keep-alive
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value
        # "retry" and unknown fields are ignored: the client reconnects on its own terms.
