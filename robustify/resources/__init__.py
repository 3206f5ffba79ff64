"""The API's resources as the client groups them: `client.models`, `client.datasets`,
`client.jobs`."""

from robustify.resources.datasets import Datasets
from robustify.resources.jobs import Jobs
from robustify.resources.models import Models

__all__ = ["Datasets", "Jobs", "Models"]
