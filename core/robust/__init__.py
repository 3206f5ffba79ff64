"""The robustness engine, pure PyTorch: attacks, schedules, adversarial fine-tuning,
evaluation, safe model I/O and datasets. Usable from a notebook; knows nothing of the service.
"""

from core.robust.attacks import fgsm, pgd
from core.robust.checkpoint import load_checkpoint, save_checkpoint
from core.robust.data import DatasetSplits, ImageDataset, load_dataset
from core.robust.errors import (
    DatasetError,
    InvalidConfig,
    ModelLoadError,
    RobustError,
    TrainingDiverged,
    UnsafeArchiveError,
)
from core.robust.evaluate import EvalReport, evaluate
from core.robust.finetune import EpochMetrics, FinetuneConfig, FinetuneResult, adversarial_finetune
from core.robust.modelio import RobustModel, load_model, save_model
from core.robust.threat import ThreatModel

__all__ = [
    "DatasetError",
    "DatasetSplits",
    "EpochMetrics",
    "EvalReport",
    "FinetuneConfig",
    "FinetuneResult",
    "ImageDataset",
    "InvalidConfig",
    "ModelLoadError",
    "RobustError",
    "RobustModel",
    "ThreatModel",
    "TrainingDiverged",
    "UnsafeArchiveError",
    "adversarial_finetune",
    "evaluate",
    "fgsm",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "pgd",
    "save_checkpoint",
    "save_model",
]
