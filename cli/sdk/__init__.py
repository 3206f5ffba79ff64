"""The robustify Python SDK: a small httpx client of the v1 API, which the CLI uses too.

```python
from cli.sdk import RobustifyClient, ThreatModelOptions, Hyperparameters

with RobustifyClient("http://127.0.0.1:8000", "rk_...") as client:
    model = client.upload_model("net.pt", input_shape=[1, 8, 8], num_classes=10,
                                architecture="builtin:digits_cnn")
    job = client.harden(model.id, dataset="builtin:digits",
                        threat_model=ThreatModelOptions(epsilon=0.2),
                        hyperparameters=Hyperparameters(epochs=10))
    job = client.wait(job.id, on_progress=lambda job: print(job.progress.fraction))
    client.download_model(job.result_model_id, "net-robust.pt")
```
"""

from cli.sdk.client import DEFAULT_URL, RobustifyClient
from cli.sdk.errors import ApiError, ApiUnavailable, ChecksumMismatch, RobustifyError
from cli.sdk.transfer import ProgressCallback
from cli.sdk.types import (
    TERMINAL_STATUSES,
    Checkpoint,
    Dataset,
    EpochRecord,
    Evaluation,
    EvaluationOptions,
    Event,
    Hyperparameters,
    Job,
    JobError,
    Model,
    Progress,
    Stage,
    ThreatModelOptions,
)

__all__ = [
    "DEFAULT_URL",
    "TERMINAL_STATUSES",
    "ApiError",
    "ApiUnavailable",
    "Checkpoint",
    "ChecksumMismatch",
    "Dataset",
    "EpochRecord",
    "Evaluation",
    "EvaluationOptions",
    "Event",
    "Hyperparameters",
    "Job",
    "JobError",
    "Model",
    "Progress",
    "ProgressCallback",
    "RobustifyClient",
    "RobustifyError",
    "Stage",
    "ThreatModelOptions",
]
