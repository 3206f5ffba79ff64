"""The robustness engine, pure PyTorch: attacks, schedules, adversarial fine-tuning,
evaluation, safe model I/O and datasets. Usable from a notebook; knows nothing of the service.

Names are imported on first use, so `core.robust.errors` can be read without importing torch
(the CLI and the API's light paths start faster); so are ThreatModel and FinetuneConfig.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "fgsm": "attacks",
    "pgd": "attacks",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DatasetSplits": "datasets.splits",
    "ImageDataset": "datasets.splits",
    "load_dataset": "datasets.loading",
    "DatasetError": "errors",
    "InvalidConfig": "errors",
    "ModelLoadError": "errors",
    "RobustError": "errors",
    "TrainingDiverged": "errors",
    "UnsafeArchiveError": "errors",
    "EvalReport": "evaluation",
    "evaluate": "evaluation",
    "EpochMetrics": "finetune_results",
    "FinetuneConfig": "finetune_config",
    "FinetuneResult": "finetune_results",
    "adversarial_finetune": "finetune",
    "RobustModel": "models.modelio",
    "load_model": "models.modelio",
    "save_model": "models.modelio",
    "ThreatModel": "threat",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'core.robust' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"core.robust.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from core.robust.attacks import fgsm, pgd
    from core.robust.checkpoint import load_checkpoint, save_checkpoint
    from core.robust.datasets.loading import load_dataset
    from core.robust.datasets.splits import DatasetSplits, ImageDataset
    from core.robust.errors import (
        DatasetError,
        InvalidConfig,
        ModelLoadError,
        RobustError,
        TrainingDiverged,
        UnsafeArchiveError,
    )
    from core.robust.evaluation import EvalReport, evaluate
    from core.robust.finetune import adversarial_finetune
    from core.robust.finetune_config import FinetuneConfig
    from core.robust.finetune_results import EpochMetrics, FinetuneResult
    from core.robust.models.modelio import load_model, save_model
    from core.robust.models.robust_model import RobustModel
    from core.robust.threat import ThreatModel
