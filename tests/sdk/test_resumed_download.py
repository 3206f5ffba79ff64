"""Downloads that lose their connection on the way (httpx.MockTransport): resumed where they
broke with Range and If-Range, started over when the server sends the whole file again, and
given up (no file left) when resuming brings no byte."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from robustify import ApiUnavailable, Client

CONTENT = bytes(range(256)) * 64  # 16 KiB
ETAG = f'"{hashlib.sha256(CONTENT).hexdigest()}"'


class DroppedAfter(httpx.SyncByteStream):
    """A body whose connection breaks after its first `count` bytes."""

    def __init__(self, content: bytes, count: int) -> None:
        self.content, self.count = content, count

    def __iter__(self) -> Iterator[bytes]:
        yield self.content[: self.count]
        raise httpx.ReadError("connection reset by peer")


def partial_content(start: int) -> httpx.Response:
    """The server's 206 answer: CONTENT from byte `start`."""
    span = f"bytes {start}-{len(CONTENT) - 1}/{len(CONTENT)}"
    return httpx.Response(
        206, headers={"ETag": ETAG, "Content-Range": span}, content=CONTENT[start:]
    )


def client_of(handler: Callable[[httpx.Request], httpx.Response]) -> Client:
    return Client("http://api.test", "rk_test", transport=httpx.MockTransport(handler))


def test_a_dropped_download_resumes_where_it_broke(tmp_path: Path) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if "range" not in request.headers:
            headers = {"ETag": ETAG, "Content-Length": str(len(CONTENT))}
            return httpx.Response(200, headers=headers, stream=DroppedAfter(CONTENT, 5000))
        start = int(request.headers["range"].removeprefix("bytes=").removesuffix("-"))
        return partial_content(start)

    progress: list[tuple[int, int | None]] = []
    with client_of(handler) as client:
        path = client.models.download(
            "mdl_1",
            tmp_path / "model.pt",
            on_progress=lambda done, total: progress.append((done, total)),
        )

    assert path.read_bytes() == CONTENT
    assert [(r.headers.get("range"), r.headers.get("if-range")) for r in requests] == [
        (None, None),
        ("bytes=5000-", ETAG),
    ]
    assert progress[-1] == (len(CONTENT), len(CONTENT))
    assert sorted(each.name for each in tmp_path.iterdir()) == ["model.pt"]


def test_a_resumed_download_the_server_sends_whole_starts_over(tmp_path: Path) -> None:
    newer = b"a newer version" * 100
    newer_etag = f'"{hashlib.sha256(newer).hexdigest()}"'
    calls = {"count": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["count"] += 1
        if calls["count"] == 1:
            return httpx.Response(200, headers={"ETag": ETAG}, stream=DroppedAfter(CONTENT, 5000))
        # If-Range no longer matches: the whole (new) file.
        return httpx.Response(200, headers={"ETag": newer_etag}, content=newer)

    with client_of(handler) as client:
        path = client.models.download("mdl_1", tmp_path / "model.pt")

    assert path.read_bytes() == newer


def test_a_download_that_cannot_be_resumed_leaves_no_file(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"ETag": ETAG}, stream=DroppedAfter(b"", 0))

    with client_of(handler) as client, pytest.raises(ApiUnavailable):
        client.models.download("mdl_1", tmp_path / "model.pt")

    assert list(tmp_path.iterdir()) == []


def test_a_download_dropped_after_its_last_byte_is_finished_without_asking_again(
    tmp_path: Path,
) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if "range" in request.headers:  # bytes=16384-: nothing left, a server answers 416
            return httpx.Response(416, headers={"Content-Range": f"bytes */{len(CONTENT)}"})
        headers = {"ETag": ETAG, "Content-Length": str(len(CONTENT))}
        return httpx.Response(200, headers=headers, stream=DroppedAfter(CONTENT, len(CONTENT)))

    with client_of(handler) as client:
        path = client.models.download("mdl_1", tmp_path / "model.pt")

    assert path.read_bytes() == CONTENT
    assert len(requests) == 1


def test_a_resumed_answer_that_starts_at_another_byte_is_not_appended(tmp_path: Path) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(200, headers={"ETag": ETAG}, stream=DroppedAfter(CONTENT, 5000))
        if "range" in request.headers:
            return partial_content(4000)  # a server that got the range wrong
        return httpx.Response(200, headers={"ETag": ETAG}, content=CONTENT)

    with client_of(handler) as client:
        path = client.models.download("mdl_1", tmp_path / "model.pt")

    assert path.read_bytes() == CONTENT
    assert [r.headers.get("range") for r in requests] == [None, "bytes=5000-", None]
