"""The engine's vocabulary (config dataclasses, the names they accept, the builtin datasets) loads
without torch, so the API can validate and document jobs without importing the engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

TORCH_FREE_MODULES = [
    "core.robust.attack_presets",
    "core.robust.best_epoch",
    "core.robust.datasets.catalog",
    "core.robust.errors",
    "core.robust.finetune_config",
    "core.robust.lr_probe",
    "core.robust.models.formats",
    "core.robust.models.spec",
    "core.robust.optimizer_rates",
    "core.robust.schedules",
    "core.robust.threat",
]


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_vocabulary_module_imports_without_torch(module: str) -> None:
    check = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, f"{module} imported torch: {result.stderr}"


def test_package_names_of_the_configs_load_without_torch() -> None:
    check = (
        "import sys; from core.robust import FinetuneConfig, InvalidConfig, ThreatModel; "
        "sys.exit('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_engine_modules_still_export_their_vocabulary() -> None:
    from core.robust import attack_presets, ensemble, finetune_config, optimizer_rates
    from core.robust.datasets import catalog, loading
    from core.robust.finetune import ATTACKS, LOSSES, FinetuneConfig
    from core.robust.models import formats, modelio
    from core.robust.optimizers import OPTIMIZERS

    assert (ATTACKS, LOSSES, FinetuneConfig) == (
        finetune_config.ATTACKS,
        finetune_config.LOSSES,
        finetune_config.FinetuneConfig,
    )
    assert ensemble.ATTACK_PRESETS is attack_presets.ATTACK_PRESETS
    assert OPTIMIZERS is optimizer_rates.OPTIMIZERS
    assert modelio.FORMATS is formats.FORMATS
    assert modelio.detect_format is formats.detect_format
    assert loading.BuiltinDataset is catalog.BuiltinDataset
    assert loading.BUILTIN_DATASETS is catalog.BUILTIN_DATASETS
    assert loading.MAX_CLASSES == catalog.MAX_CLASSES
