"""The engine's own exceptions: each says what went wrong and what to change."""


class RobustError(Exception):
    """Base of every error the engine raises on purpose. `field` names the input at fault
    where the caller knows it (the service reports it beside the message)."""

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field


class ModelLoadError(RobustError):
    """A checkpoint could not be read, built or checked against its declared input."""


class DatasetError(RobustError):
    """A dataset is missing, malformed, or does not fit the model."""


class UnsafeArchiveError(DatasetError):
    """An archive holds an entry that must never be extracted (`..`, absolute path, link, bomb)."""


class TrainingDiverged(RobustError):
    """The loss became NaN or infinite; the run stops rather than train on garbage."""


class InvalidConfig(RobustError, ValueError):
    """A threat model, schedule or fine-tuning setting is out of its bounds."""
