"""One connection to the API over httpx: requests with the API's errors as exceptions, JSON
objects, pages, uploads and checked downloads with progress, and server-sent events."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from robustify.errors import ApiError, ApiUnavailable, InvalidResponse
from robustify.sse import SseMessage, read_sse
from robustify.transfer import PartFile, ProgressCallback, ProgressReader, expected_sha256

T = TypeVar("T")

# The API answers an upload only once a child process has loaded the model (up to its limit).
UPLOAD_READ_TIMEOUT = 300.0
# An SSE stream is silent between events; the server sends a keep-alive every 15 s.
STREAM_READ_TIMEOUT = 60.0
PAGE_SIZE = 100  # the API's largest page
DOWNLOAD_RETRIES = 3  # resumptions of a download in a row that bring no byte


class Connection:
    """An httpx client of one API as one API key's owner; not shared between threads."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, self.api_key, self.timeout = url, api_key, timeout
        self._transport = transport
        headers = {"User-Agent": "robustify-sdk/1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    def clone(self) -> Connection:
        """Another connection to the same API with the same key (for another thread)."""
        return Connection(self.url, self.api_key, timeout=self.timeout, transport=self._transport)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unavailable(self.url, exc) from exc
        raise_for_error(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The answer's JSON object."""
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise InvalidResponse(f"the API's answer is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidResponse(f"the API's answer is not a JSON object: {body!r:.200}")
        return body

    def paged(
        self,
        path: str,
        parse: Callable[[dict[str, Any]], T],
        params: dict[str, Any] | None = None,
    ) -> Iterator[T]:
        """Every item of a listing, fetched page by page as the loop goes."""
        query = {"limit": PAGE_SIZE, **(params or {})}
        while True:
            page = self.json("GET", path, params=query)
            for item in page["items"]:
                yield parse(item)
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def upload(
        self,
        path: str,
        *,
        file_path: Path,
        fields: dict[str, str],
        on_progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        """POST `file_path` as the multipart field `file` beside `fields`, streamed."""
        with file_path.open("rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            reader = ProgressReader(handle, total, on_progress)
            files = {"file": (file_path.name, reader, "application/octet-stream")}
            timeout = httpx.Timeout(self.timeout, read=max(self.timeout, UPLOAD_READ_TIMEOUT))
            return self.json("POST", path, data=fields, files=files, timeout=timeout)

    def download(
        self, path: str, *, destination: Path, on_progress: ProgressCallback | None
    ) -> Path:
        """Save the answer's bytes at `destination`, checked against the sha256 of its ETag;
        a connection dropped on the way is resumed where it broke (Range with If-Range)."""
        with PartFile(destination, on_progress) as part:
            failures = 0
            while True:
                done_before = part.done
                try:
                    self._receive(path, part)
                    return part.finish(expected_sha256(part.etag))
                except httpx.TransportError as exc:
                    failures = 1 if part.done > done_before else failures + 1
                    if part.etag is None or failures > DOWNLOAD_RETRIES:
                        raise unavailable(self.url, exc) from exc
                    time.sleep(0.5 * failures)

    def _receive(self, path: str, part: PartFile) -> None:
        """One GET of a download into `part`: the rest of the bytes it holds, when their
        (strong) ETag says which version they are of."""
        if part.total is not None and part.done == part.total:
            return  # every byte came before the connection dropped: nothing left to ask for
        headers = {}
        if part.done and part.etag is not None and not part.etag.startswith("W/"):
            headers = {"Range": f"bytes={part.done}-", "If-Range": part.etag}
        with self._http.stream("GET", path, headers=headers) as response:
            raise_for_error(response)
            if response.status_code == 206 and _range_start(response) != part.done:
                # Not the rest of our bytes: take the whole file again instead.
                part.restart(etag=None, total=None)
                response.close()
                self._receive(path, part)
                return
            if response.status_code != 206:  # the whole file (again): from its first byte
                length = response.headers.get("content-length")
                part.restart(
                    etag=response.headers.get("etag"),
                    total=int(length) if length and length.isdigit() else None,
                )
            for chunk in response.iter_bytes():
                part.write(chunk)

    def server_sent_events(self, path: str, params: dict[str, Any]) -> Iterator[SseMessage]:
        """The messages of one text/event-stream answer, until the server ends it."""
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT))
        with self._http.stream(
            "GET", path, params=params, headers={"Accept": "text/event-stream"}, timeout=timeout
        ) as response:
            raise_for_error(response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise InvalidResponse("the API did not answer with server-sent events")
            yield from read_sse(response.iter_lines())


def _range_start(response: httpx.Response) -> int | None:
    """The first byte a 206 answer's Content-Range says it holds ("bytes 5000-16383/16384")."""
    unit, _, rest = response.headers.get("content-range", "").partition(" ")
    start = rest.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def unavailable(url: str, exc: BaseException) -> ApiUnavailable:
    """`exc` (httpx's, or one already mapped) as ApiUnavailable, with a reason a person reads."""
    if isinstance(exc, ApiUnavailable):
        return exc
    if isinstance(exc, httpx.ConnectError):
        reason = "nothing answers there (is the service running? `robustify up` starts one)"
    elif isinstance(exc, httpx.TimeoutException):
        reason = f"no answer in time ({type(exc).__name__})"
    else:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ApiUnavailable(url, reason)


def raise_for_error(response: httpx.Response) -> None:
    """An error answer as ApiError: the API's {"error": {...}} body, or what there is."""
    if response.status_code < 400:
        return
    response.read()
    try:
        detail = response.json()["error"]
        code, message = str(detail["code"]), str(detail["message"])
        field = detail.get("field")
    except (ValueError, KeyError, TypeError):
        code = f"http_{response.status_code}"
        text = response.text.strip().replace("\n", " ")
        message = text[:200] or response.reason_phrase or "error"
        field = None
    raise ApiError(response.status_code, code, message, field)
