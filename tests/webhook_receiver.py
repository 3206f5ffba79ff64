"""A real HTTP receiver of webhooks on loopback (http.server in a thread): it records every
request and answers the statuses it is given, in order (then 200). And a slow one, that
trickles its answer's headers a byte a second."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, server: ThreadingHTTPServer, statuses: list[int], scheme: str) -> None:
        self.server, self.statuses, self.scheme = server, statuses, scheme
        self.requests: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{self.scheme}://{host}:{port}/hook"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 200

    def wait_for(self, count: int, *, timeout: float = 15.0) -> list[Received]:
        """The requests, once at least `count` have come (AssertionError after `timeout`)."""
        wait_until(lambda: len(self.requests) >= count, timeout=timeout)
        return list(self.requests)


def wait_until(condition: Callable[[], bool], *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(0.05)


@contextmanager
def running_receiver(
    statuses: list[int] | None = None, *, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (HTTPS with `tls`, a server context)."""
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.lock:
                receiver.requests.append(Received(self.path, dict(self.headers.items()), body))
            status = receiver.next_status()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver = Receiver(server, list(statuses or []), "https" if tls else "http")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def self_signed_certificate(folder: Path, host: str) -> tuple[Path, Path]:
    """A certificate for `host` (and its key), made by openssl: (cert.pem, key.pem)."""
    cert, key = folder / f"{host}-cert.pem", folder / f"{host}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Trickler:
    """A receiver that reads each request, then sends `HTTP/1.1 200 OK...` a byte a second."""

    url: str
    accepted: list[float]  # time.monotonic() of each connection taken
    closed_by_client: list[float]  # when a send failed: the client hung up


@contextmanager
def trickling_receiver(*, byte_seconds: float = 1.0) -> Iterator[Trickler]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    host, port = listener.getsockname()[:2]
    trickler = Trickler(f"http://{host}:{port}/slow", [], [])
    stopped = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"x" * 100 + b"\r\n\r\n"

    def trickle(connection: socket.socket) -> None:
        connection.settimeout(None)
        with connection:
            connection.recv(65536)  # the request (small enough for one read on loopback)
            for index in range(len(answer)):
                if stopped.wait(byte_seconds):
                    return
                try:
                    connection.sendall(answer[index : index + 1])
                except OSError:
                    trickler.closed_by_client.append(time.monotonic())
                    return

    def accept() -> None:
        while not stopped.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            trickler.accepted.append(time.monotonic())
            threading.Thread(target=trickle, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield trickler
    finally:
        stopped.set()
        thread.join()
        listener.close()
