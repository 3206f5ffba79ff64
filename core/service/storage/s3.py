"""The artifact store as objects in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO), under
the prefix of `s3://bucket/prefix`.

A put is a multipart upload fed part by part as the stream arrives (never the whole object in
memory), hashed and counted on the way; only CompleteMultipartUpload makes the object visible,
so a refused or broken upload is aborted and leaves nothing (an object that fits in one part
is a single PutObject, atomic too). Reads are ranged GETs. Credentials come from boto3's own
sources (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...); the region is the one given (the
settings' aws_region, from AWS_REGION), else boto3's (AWS_DEFAULT_REGION, the config file).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from core.service.errors import StorageFull, TooLarge
from core.service.storage.interface import (
    CHUNK_BYTES,
    ArtifactStat,
    ArtifactStore,
    StoredArtifact,
    check_key,
)

log = logging.getLogger(__name__)

# S3's smallest part is 5 MiB (all but the last); 8 MiB parts bound a put's memory to ~16 MiB.
PART_BYTES = 8 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
NO_ROOM_CODES = {"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage", "507"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the prefix may be empty."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise ValueError(f"an s3:// URL names a bucket (s3://bucket/prefix), not {url!r}")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_missing(exc: ClientError) -> bool:
    return _error_code(exc) in MISSING_CODES


class S3ArtifactStore(ArtifactStore):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 parts are at least {MIN_PART_BYTES} bytes, not {part_bytes}")
        self.bucket, self.prefix, self.part_bytes = bucket, prefix.strip("/"), part_bytes
        # A session of its own: boto3's default one resolves the credentials once per process
        # and keeps them, whatever the AWS_* variables say when a later store is built.
        self.client = client or boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region or None
        )

    @classmethod
    def from_url(
        cls, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> S3ArtifactStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, endpoint_url=endpoint_url, region=region)

    def _object_key(self, key: str, *, allow_empty: bool = False) -> str:
        """The bucket's key for our `key` (checked: keys are ours, never user text)."""
        check_key(key, allow_empty=allow_empty)
        if not self.prefix:
            return key
        return f"{self.prefix}/{key}" if key else self.prefix

    def _our_key(self, object_key: str) -> str:
        return object_key.removeprefix(f"{self.prefix}/") if self.prefix else object_key

    def _root(self) -> str:
        """What every object of this store's key starts with."""
        return f"{self.prefix}/" if self.prefix else ""

    # -- writing ----------------------------------------------------------------------------

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        upload = _MultipartPut(self, key, max_bytes)
        try:
            for chunk in chunks:
                while upload.add(chunk):
                    chunk = b""
                    upload.send_part()
            return upload.commit()
        finally:
            upload.abort()

    async def put_stream_async(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> StoredArtifact:
        # The blocking S3 calls run in a thread, so an upload never stalls the event loop.
        upload = _MultipartPut(self, key, max_bytes)
        try:
            async for chunk in chunks:
                while upload.add(chunk):
                    chunk = b""
                    await asyncio.to_thread(upload.send_part)
            return await asyncio.to_thread(upload.commit)
        finally:
            await asyncio.to_thread(upload.abort)

    # -- reading ----------------------------------------------------------------------------

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if start < 0:
            raise ValueError(f"a range starts at 0 or later, not {start}")
        object_key = self._object_key(key)
        if end is not None and end <= start:  # an empty span: only whether the key exists
            if self.stat(key) is None:
                raise FileNotFoundError(f"no artifact {key!r}")
            return iter(())
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key}
        if start > 0 or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        # The GET is sent now, not at the first chunk: a caller answers 404 before 200.
        try:
            response = self.client.get_object(**request)
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"no artifact {key!r}") from exc
            if _error_code(exc) == "InvalidRange":  # a start at or past the end: nothing
                return iter(())
            raise
        return _stream_body(response["Body"])

    def stat(self, key: str) -> ArtifactStat | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ArtifactStat(
            size_bytes=int(head["ContentLength"]), modified=head["LastModified"].astimezone(UTC)
        )

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        return iter(sorted(self._list(prefix)))

    def _list(self, prefix: str) -> list[str]:
        base = self._object_key(prefix, allow_empty=True)
        # Listing by `base` alone would also give `jobs/job_10` for `jobs/job_1`: filter.
        search = base if prefix else self._root()
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=search
        ):
            for item in page.get("Contents", []):
                object_key = item["Key"]
                if not prefix or object_key == base or object_key.startswith(base + "/"):
                    found.append(self._our_key(object_key))
        return found

    @contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        # A download into a temp folder, removed when the context ends (no cache yet).
        chunks = self.open_range(key)  # a missing key fails before anything is made
        with tempfile.TemporaryDirectory(prefix="robustify-s3-") as folder:
            path = Path(folder) / key.rsplit("/", 1)[-1]  # the name (its suffix) stays
            with path.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            yield path

    # -- removing ---------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def delete_prefix(self, prefix: str) -> None:
        object_keys = [self._object_key(key) for key in self._list(check_key(prefix))]
        for at in range(0, len(object_keys), DELETE_BATCH):
            batch = object_keys[at : at + DELETE_BATCH]
            answer = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            if answer.get("Errors"):  # DeleteObjects answers 200 even when some keys failed
                first = answer["Errors"][0]
                raise OSError(
                    f"could not delete {len(answer['Errors'])} object(s) under {prefix!r}: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    def sweep_orphans(self, older_than: float) -> list[str]:
        """Abort multipart uploads under the prefix begun more than `older_than` seconds ago:
        what a killed writer left (S3 keeps, and bills, their parts until aborted). Returns
        the keys they were for. Committed objects are never touched."""
        cutoff = time.time() - older_than
        removed: list[str] = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._root()
        ):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() >= cutoff:
                    continue
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                removed.append(self._our_key(upload["Key"]))
        if removed:
            log.info("aborted %d stale multipart upload(s) in the artifact store", len(removed))
        return removed


class _MultipartPut:
    """One put: counts, hashes and buffers the stream, sends each full part; the multipart
    upload begins only once a first part is full (a small object is one PutObject)."""

    def __init__(self, store: S3ArtifactStore, key: str, max_bytes: int | None) -> None:
        self.store, self.key, self.max_bytes = store, key, max_bytes
        self.object_key = store._object_key(key)
        self.buffer = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.committed = False

    def add(self, chunk: bytes) -> bool:
        """Take `chunk`; True while a full part waits to be sent (call send_part, then again
        with b"" until False)."""
        if chunk:
            self.size += len(chunk)
            if self.max_bytes is not None and self.size > self.max_bytes:
                raise TooLarge(f"the upload is larger than the limit of {self.max_bytes} bytes")
            self.digest.update(chunk)
            self.buffer.extend(chunk)
        return len(self.buffer) >= self.store.part_bytes

    def send_part(self, *, last: bool = False) -> None:
        """Send the next full part (or, when `last`, whatever is buffered)."""
        client, bucket = self.store.client, self.store.bucket
        size = len(self.buffer) if last else self.store.part_bytes
        with _no_room_is_storage_full(self.key):
            if self.upload_id is None:
                started = client.create_multipart_upload(Bucket=bucket, Key=self.object_key)
                self.upload_id = started["UploadId"]
            with memoryview(self.buffer) as view:  # one copy of the part, not two
                part = bytes(view[:size])
            del self.buffer[:size]
            number = len(self.parts) + 1
            sent = client.upload_part(
                Bucket=bucket,
                Key=self.object_key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=part,
            )
            self.parts.append({"ETag": sent["ETag"], "PartNumber": number})

    def commit(self) -> StoredArtifact:
        client, bucket = self.store.client, self.store.bucket
        with _no_room_is_storage_full(self.key):
            if self.upload_id is None:
                client.put_object(Bucket=bucket, Key=self.object_key, Body=bytes(self.buffer))
            else:
                if self.buffer:  # the last part may be smaller than the others
                    self.send_part(last=True)
                client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self.object_key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
        self.committed = True
        return StoredArtifact(key=self.key, size_bytes=self.size, sha256=self.digest.hexdigest())

    def abort(self) -> None:
        """Drop the parts sent unless committed (a no-op after commit, or before any part)."""
        if self.committed or self.upload_id is None:
            return
        try:
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.object_key, UploadId=self.upload_id
            )
        except ClientError as exc:  # the sweep aborts it later; the first error is the one
            log.warning("could not abort the multipart upload of %s: %s", self.key, exc)


@contextmanager
def _no_room_is_storage_full(key: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        if _error_code(exc) not in NO_ROOM_CODES:
            raise
        log.error("artifact store full writing %s: %s", key, exc)
        raise StorageFull(
            "the artifact store is full: nothing was stored; free space or raise the "
            "bucket's quota, then retry"
        ) from exc


def _stream_body(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()
