"""Files in and out of the artifact store over HTTP.

In: a multipart upload (one file part plus small form fields) goes straight into the store,
chunk by chunk as it arrives: never held whole in memory, never spooled elsewhere. The size
limit is enforced on the bytes actually received, so a chunked body without a Content-Length
(or one that lies about it) is cut off just the same.

The stored file is then checked and registered by api.registration; downloads are
api.downloads'.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import ApiError
from api.schemas import ErrorBody
from api.slots import OwnerSlots
from core.service.errors import InvalidRequest, TooLarge
from core.service.storage import ArtifactStore, StoredArtifact

FILE_FIELD = "file"
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 32
# Room for the boundaries, part headers and form fields around the file itself.
FORM_OVERHEAD_BYTES = MAX_PARTS * (MAX_FIELD_BYTES + 1024)
# The process receives and checks at most this many owners' full share of uploads at once.
UPLOAD_OWNERS_AT_ONCE = 8

# What an upload route answers besides its 201, for its OpenAPI `responses`.
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    408: {
        "model": ErrorBody,
        "description": "no byte of the body arrived for `upload_idle_timeout_seconds`",
    },
    429: {
        "model": ErrorBody,
        "description": "`upload_slots_per_owner` uploads in flight for this owner, or the "
        "process's cap for all owners",
    },
}


@dataclass(frozen=True)
class ReceivedUpload:
    artifact: StoredArtifact
    filename: str
    fields: dict[str, str]


def upload_request_body(fields: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI requestBody of a multipart upload (the route parses the stream itself)."""
    properties = {FILE_FIELD: {"type": "string", "format": "binary"}, **fields}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": properties, "required": [FILE_FIELD]}
            }
        },
    }


def upload_slots(*, per_owner: int) -> OwnerSlots:
    """Uploads in flight (received, then checked in a child process) per owner and per process.

    The process-wide cap bounds the child processes; it is UPLOAD_OWNERS_AT_ONCE owners' full
    share, so no single owner can reach it, and a stalled body frees its slot after the idle
    timeout."""
    return OwnerSlots(
        per_owner=per_owner,
        total=UPLOAD_OWNERS_AT_ONCE * per_owner,
        what="uploads being received or checked",
        code="too_many_uploads",
        retry_after_seconds=5,
    )


def clean_text(raw: str, *, limit: int = 200) -> str:
    """Client text fit to store: no control characters (PostgreSQL refuses NUL), trimmed."""
    return "".join(c for c in raw if c.isprintable()).strip()[:limit]


def safe_filename(raw: str) -> str:
    """The last path component of a client's file name (browsers may send a full path)."""
    return clean_text(PureWindowsPath(PurePosixPath(raw).name).name) or "upload"


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


class _FormState:
    """The parser's callbacks: file bytes queue up in `pending`, fields are collected."""

    def __init__(self) -> None:
        self.part = _Part()
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.fields: dict[str, str] = {}
        self.parts = 0
        self.filename: str | None = None  # set once the file part's headers are in
        self.file_done = False
        self.pending: deque[bytes] = deque()
        self.ended = False

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self.header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidRequest(f"the form has more than {MAX_PARTS} parts")
        self.part = _Part()

    def on_header_end(self) -> None:
        name = bytes(self.header_field).decode("latin-1").strip().lower()
        self.part.headers[name] = bytes(self.header_value).decode("latin-1").strip()
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self.part.headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise ApiError(400, "malformed_multipart", "a form part has no name")
        self.part.name = _decode(options[b"name"])
        filename = options.get(b"filename")
        self.part.filename = None if filename is None else _decode(filename)
        if self.part.name == FILE_FIELD:
            if self.filename is not None:
                raise InvalidRequest("send exactly one file part", field=FILE_FIELD)
            self.part.is_file = True
            self.filename = safe_filename(self.part.filename or FILE_FIELD)
        elif self.part.filename is not None:
            raise InvalidRequest(
                f"unexpected file in form field {self.part.name!r}; the file goes in "
                f"{FILE_FIELD!r}",
                field=self.part.name[:100],
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.is_file:
            self.pending.append(bytes(data[start:end]))
            return
        self.part.value.extend(data[start:end])
        if len(self.part.value) > MAX_FIELD_BYTES:
            raise InvalidRequest(
                f"form field {self.part.name!r} is longer than {MAX_FIELD_BYTES} bytes",
                field=self.part.name[:100],
            )

    def on_part_end(self) -> None:
        if self.part.is_file:
            self.file_done = True
        else:
            self.fields[self.part.name] = bytes(self.part.value).decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True


def _decode(raw: bytes) -> str:
    # Header bytes were read as latin-1; clients send UTF-8 names, so undo that where it fits.
    try:
        return raw.decode("latin-1").encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiError(
            400,
            "not_multipart",
            "send the upload as multipart/form-data with the file in the 'file' part",
        )
    return options[b"boundary"]


def least_file_bytes(request: Request) -> int | None:
    """The least the file can be by the request's Content-Length (less the form's room around
    it); None without a Content-Length."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        return None
    return max(int(declared) - FORM_OVERHEAD_BYTES, 0)


def _check_declared_length(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if (
        declared is not None
        and declared.isdigit()
        and int(declared) > max_bytes + FORM_OVERHEAD_BYTES
    ):
        raise TooLarge(
            f"the upload is larger than the limit of {max_bytes} bytes", field=FILE_FIELD
        )


async def receive_upload(
    request: Request,
    store: ArtifactStore,
    *,
    key_for: Callable[[str], str],
    max_bytes: int,
    idle_timeout_seconds: float,
) -> ReceivedUpload:
    """Stream the request's `file` part into `store` at `key_for(filename)`.

    Raises TooLarge past `max_bytes` of file (or of the whole body, form included), ApiError
    408 when no byte of the body arrives for `idle_timeout_seconds`, and InvalidRequest /
    ApiError for a malformed form. The caller removes the key on failure.
    """
    _check_declared_length(request, max_bytes)
    state = _FormState()
    try:
        parser = MultipartParser(_boundary(request), state.callbacks())
    except FormParserError as exc:
        raise ApiError(400, "malformed_multipart", f"the form cannot be parsed: {exc}") from exc
    body = request.stream().__aiter__()
    received = 0

    async def feed_next() -> bool:
        """Parse one more chunk of the body; False once the body has ended."""
        nonlocal received
        try:
            # A client that stops sending would otherwise hold its upload slot forever.
            async with asyncio.timeout(idle_timeout_seconds):
                chunk = await body.__anext__()
        except StopAsyncIteration:
            parser.finalize()
            return False
        except TimeoutError:
            raise ApiError(
                408,
                "upload_stalled",
                f"no byte of the upload arrived for {idle_timeout_seconds:g} seconds, so it "
                "was cut off; send it again",
                headers={"Connection": "close"},
            ) from None
        received += len(chunk)
        if received > max_bytes + FORM_OVERHEAD_BYTES:
            raise TooLarge(
                f"the upload is larger than the limit of {max_bytes} bytes", field=FILE_FIELD
            )
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise ApiError(400, "malformed_multipart", f"the form cannot be parsed: {exc}") from exc
        return True

    # The file's name decides its key (a dataset keeps its extension): read up to its headers.
    while state.filename is None and await feed_next():
        pass
    if state.filename is None:
        raise InvalidRequest(f"the form has no {FILE_FIELD!r} part", field=FILE_FIELD)
    filename = state.filename

    async def file_chunks() -> AsyncIterator[bytes]:
        while True:
            while state.pending:
                yield state.pending.popleft()
            if not await feed_next():
                break
        if not state.ended or not state.file_done:
            raise ApiError(400, "malformed_multipart", "the form ended before its last boundary")

    try:
        artifact = await store.put_stream_async(
            key_for(filename), file_chunks(), max_bytes=max_bytes
        )
    except TooLarge as exc:
        raise TooLarge(exc.message, field=FILE_FIELD) from exc
    return ReceivedUpload(artifact=artifact, filename=filename, fields=state.fields)
