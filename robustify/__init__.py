"""The robustify Python SDK: a small httpx client of the v1 API, which the CLI uses too.

```python
from robustify import Client, Hyperparameters, ThreatModelOptions

with Client("http://127.0.0.1:8000", "rk_...") as client:
    model = client.models.upload("net.pt", input_shape=[1, 8, 8], num_classes=10,
                                 architecture="builtin:digits_cnn")
    job = client.jobs.create(kind="harden", model_id=model.id, dataset="builtin:digits",
                             threat_model=ThreatModelOptions(epsilon=0.2),
                             hyperparameters=Hyperparameters(epochs=10))
    job = client.jobs.wait(job.id, on_progress=lambda job: print(job.progress.fraction))
    client.models.download(job.result_model_id, "net-robust.pt")
```
"""

from robustify.client import DEFAULT_URL, Client
from robustify.errors import (
    ApiError,
    ApiUnavailable,
    ChecksumMismatch,
    InvalidResponse,
    RobustifyError,
)
from robustify.transfer import ProgressCallback
from robustify.types.catalog import Dataset, Model
from robustify.types.evaluation import Evaluation, Stage
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
from robustify.types.options import (
    EvaluationOptions,
    Hyperparameters,
    Resources,
    ThreatModelOptions,
)
from robustify.types.webhooks import Webhook, WebhookDelivery

__all__ = [
    "DEFAULT_URL",
    "TERMINAL_STATUSES",
    "ApiError",
    "ApiUnavailable",
    "Checkpoint",
    "ChecksumMismatch",
    "Client",
    "Dataset",
    "EpochRecord",
    "Evaluation",
    "EvaluationOptions",
    "Event",
    "Hyperparameters",
    "InvalidResponse",
    "Job",
    "JobError",
    "JobMetrics",
    "Model",
    "Progress",
    "ProgressCallback",
    "Resources",
    "RobustifyError",
    "Stage",
    "ThreatModelOptions",
    "Webhook",
    "WebhookDelivery",
]
