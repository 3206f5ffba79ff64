"""Artifacts out of the store over HTTP: streamed from the store's ranges, with an ETag,
If-None-Match (304), Range (206, several ranges as multipart/byteranges; 416 outside the
file) and If-Range, as a static file server would answer."""

from __future__ import annotations

from collections.abc import Iterator
from email.utils import formatdate
from secrets import token_hex
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from api.byte_ranges import MalformedRange, UnsatisfiableRange, parse_byte_ranges
from api.errors import ApiError
from api.uploads import safe_filename
from core.service.storage import ArtifactStat, ArtifactStore

MEDIA_TYPE = "application/octet-stream"


def artifact_download(
    request: Request, store: ArtifactStore, key: str, *, etag: str, filename: str
) -> Response:
    """Stream the artifact `key` as `filename` with `etag`: 304 when If-None-Match matches,
    206 for a satisfiable Range, 416 (in the API's error shape, with Content-Range) for one
    outside the file, 404 when the store no longer holds it."""
    stat = store.stat(key)
    if stat is None:
        raise ApiError(404, "not_found", "the file behind this resource is missing")
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    headers = _headers(stat, etag=etag, filename=safe_filename(filename))
    ranges = _requested_ranges(request, stat.size_bytes)
    if ranges and _if_range_holds(request.headers.get("if-range"), headers):
        if len(ranges) == 1:
            return _single_range(store, key, span=ranges[0], size=stat.size_bytes, headers=headers)
        return _multiple_ranges(store, key, spans=ranges, size=stat.size_bytes, headers=headers)
    headers["Content-Length"] = str(stat.size_bytes)
    return StreamingResponse(store.open_range(key), media_type=MEDIA_TYPE, headers=headers)


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    candidates = [value.strip().removeprefix("W/") for value in header.split(",")]
    return "*" in candidates or etag.removeprefix("W/") in candidates


def _headers(stat: ArtifactStat, *, etag: str, filename: str) -> dict[str, str]:
    quoted = quote(filename)
    if quoted != filename:
        disposition = f"attachment; filename*=utf-8''{quoted}"
    else:
        disposition = f'attachment; filename="{filename}"'
    return {
        "ETag": etag,
        "Last-Modified": formatdate(stat.modified.timestamp(), usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Disposition": disposition,
    }


def _requested_ranges(request: Request, size: int) -> list[tuple[int, int]]:
    """The Range header's [start, end) spans (none without one); a bad range answers in the
    API's error shape."""
    http_range = request.headers.get("range")
    if http_range is None:
        return []
    try:
        return parse_byte_ranges(http_range, size)
    except UnsatisfiableRange:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the range {http_range[:60]!r} lies outside the file ({size} bytes)",
            field="Range",
            headers={"Content-Range": f"bytes */{size}"},
        ) from None
    except MalformedRange as exc:
        raise ApiError(
            400,
            "invalid_range",
            f"cannot read the Range header {http_range[:60]!r}: {exc}",
            field="Range",
        ) from None


def _if_range_holds(if_range: str | None, headers: dict[str, str]) -> bool:
    """A range is served only for the version the client has (RFC 9110: a strong match)."""
    if if_range is None:
        return True
    if if_range.startswith("W/"):
        return False
    return if_range in (headers["ETag"], headers["Last-Modified"])


def _single_range(
    store: ArtifactStore, key: str, *, span: tuple[int, int], size: int, headers: dict[str, str]
) -> Response:
    start, end = span
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    chunks = store.open_range(key, start, end)
    return StreamingResponse(chunks, status_code=206, media_type=MEDIA_TYPE, headers=headers)


def _multiple_ranges(
    store: ArtifactStore,
    key: str,
    *,
    spans: list[tuple[int, int]],
    size: int,
    headers: dict[str, str],
) -> Response:
    boundary = token_hex(13)
    # Each part: its head, its bytes, CRLF; the body ends with the closing boundary.
    parts = [
        (
            (
                f"--{boundary}\r\nContent-Type: {MEDIA_TYPE}\r\n"
                f"Content-Range: bytes {start}-{end - 1}/{size}\r\n\r\n"
            ).encode("latin-1"),
            start,
            end,
        )
        for start, end in spans
    ]
    closing = f"--{boundary}--".encode("latin-1")
    length = sum(len(head) + (end - start) + 2 for head, start, end in parts)
    headers["Content-Length"] = str(length + len(closing))

    def body() -> Iterator[bytes]:
        for head, start, end in parts:
            yield head
            yield from store.open_range(key, start, end)
            yield b"\r\n"
        yield closing

    return StreamingResponse(
        body(),
        status_code=206,
        media_type=f"multipart/byteranges; boundary={boundary}",
        headers=headers,
    )
