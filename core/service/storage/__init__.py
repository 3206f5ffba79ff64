"""The artifact store: uploads, checkpoints and hardened models as objects under keys.

`ArtifactStore` is the interface every caller speaks (streams in, ranges out, stat, list,
delete, a local copy for the engine); `LocalArtifactStore` keeps the objects under one folder.
`store_from_settings` is the one place that picks the store for a deployment.
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
    "store_from_settings",
]


def store_from_settings(settings: Settings) -> ArtifactStore:
    """The deployment's artifact store (today the folder `settings.resolved_artifacts_dir`)."""
    return LocalArtifactStore(settings.resolved_artifacts_dir)
