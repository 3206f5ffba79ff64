"""What the API answers, as typed dataclasses, and the options of a job as the SDK takes them.

Each answer keeps the JSON it came from in `raw` (fields a newer server adds are there too).
"""

from robustify.types.catalog import Dataset, Model
from robustify.types.evaluation import Evaluation, Interval, Stage, wilson_interval
from robustify.types.jobs import (
    TERMINAL_STATUSES,
    Checkpoint,
    EpochRecord,
    Event,
    Job,
    JobError,
    JobMetrics,
    Progress,
)
from robustify.types.options import EvaluationOptions, Hyperparameters, ThreatModelOptions

__all__ = [
    "TERMINAL_STATUSES",
    "Checkpoint",
    "Dataset",
    "EpochRecord",
    "Evaluation",
    "EvaluationOptions",
    "Event",
    "Hyperparameters",
    "Interval",
    "Job",
    "JobError",
    "JobMetrics",
    "Model",
    "Progress",
    "Stage",
    "ThreatModelOptions",
    "wilson_interval",
]
