"""An overall deadline on one webhook post.

httpx's timeouts bound each operation (a read timeout is per chunk), so a receiver that trickles
its answer a byte at a time would hold a post for as long as it likes. This ends the post when
its time is up by shutting down the sockets it opened (they are learnt from httpcore's `trace`
extension); the blocked read then fails at once and the post ends as a failed attempt.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Any

CONNECTED_EVENT = "connection.connect_tcp.complete"


class PostDeadline:
    """A context manager around one post; pass `trace` as the request's "trace" extension.

    The connections must not be kept alive for a later post (the client's pool keeps none), so
    every post opens its own and the deadline sees each socket it uses."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        # Duplicates of the post's sockets: shutting one down ends the original's blocked read
        # (and survives TLS wrapping, which detaches the original socket object).
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def __enter__(self) -> PostDeadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        with self._lock:
            for watched in self._sockets:
                watched.close()
            self._sockets.clear()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event != CONNECTED_EVENT or info.get("return_value") is None:
            return
        sock = info["return_value"].get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            watched = sock.dup()
            self._sockets.append(watched)
            if self.expired:  # connected just as the time ran out
                _shut(watched)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for watched in self._sockets:
                _shut(watched)


def _shut(watched: socket.socket) -> None:
    try:
        watched.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the other side
        pass
