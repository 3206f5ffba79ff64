"""The API's resources as the client groups them: `client.models`, `client.datasets`,
`client.jobs`, `client.webhooks`."""

from robustify.resources.datasets import Datasets
from robustify.resources.jobs import Jobs
from robustify.resources.models import Models
from robustify.resources.webhooks import Webhooks

__all__ = ["Datasets", "Jobs", "Models", "Webhooks"]
