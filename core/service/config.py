"""Settings: one object, read from ROBUSTIFY_* environment variables at the edge and passed down.

The defaults are the embedded configuration: everything lives in `data_dir` (a SQLite file,
a filesystem Celery transport, an artifact folder), so one machine runs with nothing to install.
Production points `database_url` at PostgreSQL and `broker_url` at Redis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROBUSTIFY_", extra="ignore")

    data_dir: Path = Path(".robustify")
    database_url: str | None = None  # default: sqlite:///<data_dir>/robustify.db
    broker_url: str | None = None  # default: filesystem transport under <data_dir>/broker
    artifacts_dir: Path | None = None  # default: <data_dir>/artifacts
    # Where artifacts live: s3://bucket/prefix for an S3-compatible store, or a folder (a path
    # or file:///path, as artifacts_dir). Unset: the folder artifacts_dir.
    artifacts_url: str | None = None
    # The S3 API of a store other than AWS (SeaweedFS, MinIO); credentials are boto3's own
    # AWS_* variables.
    s3_endpoint_url: str | None = None
    # The bucket's region, from AWS_REGION (which boto3 itself does not read); unset: boto3's
    # own (AWS_DEFAULT_REGION, the config file).
    aws_region: str | None = Field(
        default=None, validation_alias=AliasChoices("aws_region", "AWS_REGION")
    )
    datasets_dir: Path | None = None  # torchvision datasets; default: <data_dir>/datasets
    allow_download: bool = False

    # Uploads: the limit is enforced on the bytes received, not on Content-Length.
    max_model_bytes: int = Field(default=1024**3, ge=1)
    max_dataset_bytes: int = Field(default=4 * 1024**3, ge=1)
    # Upload validation runs in a child process with these limits.
    validation_timeout_seconds: float = Field(default=120.0, gt=0)
    validation_memory_bytes: int = Field(default=4 * 1024**3, ge=256 * 1024**2)
    # Uploads in flight per owner (received and checked at once); past it, 429. A client that
    # sends no byte of its body for `upload_idle_timeout_seconds` is cut off and its slot freed.
    upload_slots_per_owner: int = Field(default=4, ge=1)
    upload_idle_timeout_seconds: float = Field(default=30.0, gt=0)
    # Live event streams (SSE) open at once per owner; past it, 429.
    max_event_streams_per_owner: int = Field(default=20, ge=1)
    # Partial uploads (a `.part` file, an empty model folder) older than this are swept away.
    orphan_upload_age_seconds: float = Field(default=3600.0, gt=0)

    # The sandbox every process that runs a user's model lives in (the upload check, the
    # worker's training and evaluation): "bubblewrap" (namespaces: no file outside the job
    # folder, no network, no inherited environment), "none" (a plain child process with the
    # same limits), or "auto" (bubblewrap where it works here, else none).
    sandbox: Literal["auto", "bubblewrap", "none"] = "auto"
    # Without a working sandbox a TorchScript model (a program) is refused, unless this says so.
    allow_unsandboxed_torchscript: bool = False
    # Limits on a job's sandboxed engine process (training and evaluation).
    # Default: half of this machine's memory, so one runaway job cannot take the host down.
    job_memory_bytes: int = Field(default_factory=lambda: _half_of_memory(), ge=256 * 1024**2)
    sandbox_max_processes: int = Field(default=256, ge=8)

    # Job life: a worker renews its lease every heartbeat; an expired lease means a lost worker.
    lease_seconds: float = Field(default=120.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    run_sweeper: bool = True  # the API process runs the sweeper thread
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    # A queued job whose message may have been lost (broker restart) is enqueued again after this.
    requeue_queued_after_seconds: float = Field(default=300.0, gt=0)
    # Per-owner limits (None: none); past one, 429 with Retry-After. The defaults suit a small
    # team's service: 100 queued jobs is a long sweep of experiments but not a runaway script,
    # and 4 running lets one person use a few GPUs at once while the rest wait their turn
    # (workers always take the owner with the fewest running jobs first, so this is a cap, not
    # the fairness). Stored bytes (models, datasets, job results) are unlimited by default:
    # only the operator knows the store's size; past it the store's own 507 is the backstop.
    max_queued_jobs_per_owner: int | None = Field(default=100, ge=1)
    max_running_jobs_per_owner: int | None = Field(default=4, ge=1)
    max_stored_bytes_per_owner: int | None = Field(default=None, ge=0)
    # Celery: hard time limit < visibility timeout (a message is never redelivered mid-run).
    task_time_limit_seconds: int = Field(default=24 * 3600, ge=60)
    worker_device: str | None = None  # e.g. "cuda:0"; default: cuda if available, else cpu
    # A CPU worker's ranks: the most processes (resources.world_size, gloo) it runs one job
    # across. A GPU worker has one rank per GPU it sees.
    worker_processes: int = Field(default=1, ge=1, le=64)
    # Uploaded ImageFolder archives, extracted once per sha256 and reused by later jobs (default:
    # <data_dir>/dataset-cache); the least recently used entries go past the size bound.
    dataset_cache_dir: Path | None = None
    dataset_cache_max_bytes: int = Field(default=50 * 1024**3, ge=0)
    # A split whose decoded pixels pass this is streamed from the cached files, decoded by this
    # many DataLoader processes in the job's sandbox, instead of held in memory.
    dataset_stream_threshold_bytes: int = Field(default=512 * 1024**2, ge=1)
    dataset_stream_workers: int = Field(default=2, ge=0, le=64)
    # CPU threads torch uses in a job (default: torch's own choice). A resumed job ends with the
    # same weights as an uninterrupted one only when both ran with the same number of threads.
    torch_threads: int | None = Field(default=None, ge=1)

    # Webhooks: job state changes posted to owners' endpoints by a thread of the API process,
    # retried with exponential backoff (backoff * 2**(attempt-1), at most max_backoff) until
    # delivered or out of attempts. Endpoints on loopback, private, link-local, multicast or
    # reserved addresses are refused (SSRF) unless webhooks_allow_private.
    run_webhook_delivery: bool = True
    webhooks_allow_private: bool = False
    webhook_poll_interval_seconds: float = Field(default=1.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=8, ge=1, le=30)
    webhook_backoff_seconds: float = Field(default=10.0, gt=0)
    webhook_max_backoff_seconds: float = Field(default=3600.0, gt=0)

    log_level: str = "INFO"
    # JSON lines for log collectors; "text" for a person reading a terminal.
    log_format: Literal["json", "text"] = "json"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'robustify.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @field_validator(
        "max_queued_jobs_per_owner",
        "max_running_jobs_per_owner",
        "max_stored_bytes_per_owner",
        mode="before",
    )
    @classmethod
    def _no_limit(cls, value: object) -> object:
        # An environment variable cannot be None: "none" (or an empty value) says no limit.
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _s3_or_folder(cls, url: str | None) -> str | None:
        if url is not None and url.startswith("s3://"):
            if not url.removeprefix("s3://").split("/")[0]:
                raise ValueError(f"ROBUSTIFY_ARTIFACTS_URL names no bucket: {url!r}")
            return url
        if url is None or url.startswith("file://") or "://" not in url:
            return url
        raise ValueError(
            f"ROBUSTIFY_ARTIFACTS_URL must be s3://bucket/prefix or a folder, not {url!r}"
        )

    @property
    def artifacts_in_s3(self) -> bool:
        return bool(self.artifacts_url and self.artifacts_url.startswith("s3://"))

    @property
    def resolved_artifacts_dir(self) -> Path:
        """The artifact folder (meaningless when artifacts_in_s3)."""
        if self.artifacts_url and not self.artifacts_in_s3:
            return Path(self.artifacts_url.removeprefix("file://")).resolve()
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_datasets_dir(self) -> Path:
        return (self.datasets_dir or self.data_dir / "datasets").resolve()

    @property
    def resolved_dataset_cache_dir(self) -> Path:
        return (self.dataset_cache_dir or self.data_dir / "dataset-cache").resolve()

    @property
    def visibility_timeout_seconds(self) -> int:
        return self.task_time_limit_seconds + 3600


def _half_of_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 8 * 1024**3
