"""The public contract: request and response bodies of the v1 API, one module per part (what
every part shares, models and datasets, the job request, the answers about jobs)."""

from api.schemas.catalog import DatasetOut, ModelOut
from api.schemas.common import ID_PATTERN, ErrorBody, ErrorDetail, HealthOut, Page, StrictRequest
from api.schemas.job_answers import CheckpointOut, EventOut, JobMetrics, JobOut, JobStatus
from api.schemas.job_request import (
    EVALUATION_DEFAULTS,
    FINETUNE_DEFAULTS,
    MAX_EPSILON,
    THREAT_DEFAULTS,
    EvaluationIn,
    HyperparametersIn,
    JobCreate,
    ThreatModelIn,
)

__all__ = [
    "EVALUATION_DEFAULTS",
    "FINETUNE_DEFAULTS",
    "ID_PATTERN",
    "MAX_EPSILON",
    "THREAT_DEFAULTS",
    "CheckpointOut",
    "DatasetOut",
    "ErrorBody",
    "ErrorDetail",
    "EvaluationIn",
    "EventOut",
    "HealthOut",
    "HyperparametersIn",
    "JobCreate",
    "JobMetrics",
    "JobOut",
    "JobStatus",
    "ModelOut",
    "Page",
    "StrictRequest",
    "ThreatModelIn",
]
