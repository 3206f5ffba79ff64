"""The bucket of ROBUSTIFY_ARTIFACTS_URL created where it does not exist yet: a deployment's
one-shot step before its API and workers start (docker-compose.yml's `s3-bucket` service).
The API and the workers never create buckets themselves, so their keys need no such right.

    python -m core.service.storage.bucket

waits for the S3 endpoint to answer, creates the bucket or finds it there, and exits 0; run
again, it changes nothing. With the artifacts in a folder it has nothing to do.
"""

from __future__ import annotations

import logging
import sys
import time

from botocore.exceptions import ClientError, EndpointConnectionError

from core.service.config import Settings
from core.service.storage.s3 import S3ArtifactStore

log = logging.getLogger(__name__)

NO_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}
ALREADY_THERE_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
# us-east-1 is S3's default location, which a CreateBucket request may not name.
DEFAULT_LOCATION = "us-east-1"


def ensure_bucket(store: S3ArtifactStore) -> bool:
    """Create `store`'s bucket unless it exists; True when this call created it."""
    client = store.client
    try:
        client.head_bucket(Bucket=store.bucket)
        return False
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) not in NO_BUCKET_CODES:
            raise
    request: dict[str, object] = {"Bucket": store.bucket}
    region = client.meta.region_name
    if region and region != DEFAULT_LOCATION:
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**request)
    except ClientError as exc:  # another process created it between the two calls
        if str(exc.response.get("Error", {}).get("Code", "")) in ALREADY_THERE_CODES:
            return False
        raise
    return True


def ensure_bucket_when_up(store: S3ArtifactStore, *, timeout_seconds: float) -> bool:
    """ensure_bucket, retried while the endpoint refuses connections (a store still starting)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return ensure_bucket(store)
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def main(timeout_seconds: float = 120.0) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = Settings()
    if not settings.artifacts_in_s3 or settings.artifacts_url is None:
        log.info("the artifacts are in a folder (%s): no bucket", settings.resolved_artifacts_dir)
        return 0
    store = S3ArtifactStore.from_url(
        settings.artifacts_url, endpoint_url=settings.s3_endpoint_url, region=settings.aws_region
    )
    try:
        created = ensure_bucket_when_up(store, timeout_seconds=timeout_seconds)
    except (ClientError, EndpointConnectionError) as exc:
        log.error("could not make the bucket %s: %s", store.bucket, exc)
        return 1
    log.info("bucket %s %s", store.bucket, "created" if created else "already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
