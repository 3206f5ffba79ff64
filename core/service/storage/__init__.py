"""The artifact store: uploads, checkpoints and hardened models as objects under keys.

`ArtifactStore` is the interface every caller speaks (streams in, ranges out, stat, list,
delete, a local copy for the engine); `LocalArtifactStore` keeps the objects under one folder,
`S3ArtifactStore` in an S3-compatible bucket.
`store_from_settings` is the one place that picks the store for a deployment;
`artifacts_location` says where it puts them.
"""

from __future__ import annotations

from core.service.config import Settings
from core.service.storage.interface import (
    CHUNK_BYTES,
    ArtifactStat,
    ArtifactStore,
    StoredArtifact,
)
from core.service.storage.local import LocalArtifactStore

__all__ = [
    "CHUNK_BYTES",
    "ArtifactStat",
    "ArtifactStore",
    "LocalArtifactStore",
    "StoredArtifact",
    "artifacts_location",
    "store_from_settings",
]


def store_from_settings(settings: Settings) -> ArtifactStore:
    """The deployment's artifact store: the bucket of `artifacts_url` when it is s3://, else
    the folder `settings.resolved_artifacts_dir`."""
    if settings.artifacts_in_s3:
        assert settings.artifacts_url is not None
        # Imported only here: boto3 costs every process that imports the store ~150 ms.
        from core.service.storage.s3 import S3ArtifactStore

        return S3ArtifactStore.from_url(
            settings.artifacts_url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.aws_region,
        )
    return LocalArtifactStore(settings.resolved_artifacts_dir)


def artifacts_location(settings: Settings) -> str:
    """Where store_from_settings puts the artifacts, fit to print: the s3:// URL and the
    endpoint it is reached at (AWS's own when none is set), or the folder."""
    if settings.artifacts_in_s3:
        return f"{settings.artifacts_url} at {settings.s3_endpoint_url or 'AWS S3'}"
    return str(settings.resolved_artifacts_dir)
