"""A succeeded job's reproducibility manifest: seed, versions, device, config, inputs and
outputs, what it takes to run the job again."""

from __future__ import annotations

import platform
from typing import Any

from core.service.engine.protocol import Finished
from core.service.sandbox.runner import Sandbox
from core.service.tables import Job, Model


def build_manifest(
    job: Job,
    *,
    model_row: Model,
    finished: Finished,
    result_model: Model | None,
    sandbox: Sandbox,
) -> dict[str, Any]:
    """What it takes to reproduce the job: seed, versions, device, config, inputs and outputs."""
    environment = finished.environment
    return {
        "job_id": job.id,
        "seed": job.config["seed"],
        "config": job.config,
        "dataset": {
            "name": job.dataset,
            "train_size": finished.dataset.train_size,
            "test_size": finished.dataset.test_size,
            "validation": _validation_manifest(finished),
        },
        # The rate trained at, which a config with peak_lr null leaves to the probe: passing it
        # as peak_lr reproduces the run without probing.
        "peak_lr": finished.peak_lr,
        "optimizer": finished.optimizer,
        # The augmentation trained with: the config's, or the data's default for null ("auto").
        "augmentation": finished.augmentation,
        # The training step's precision on the worker's device ("auto" resolved).
        "precision": finished.precision,
        # The mix with the starting weights handed back when no epoch kept clean accuracy (a
        # fraction None: the best epoch's weights stayed); None: no search was made.
        "interpolation": _interpolation_manifest(job),
        "input_model": {"id": model_row.id, "sha256": model_row.sha256, "format": model_row.format},
        "output_model": None
        if result_model is None
        else {"id": result_model.id, "sha256": result_model.sha256},
        "evaluation_subset": job.metrics.get("before", {}).get("subset_indices"),
        "versions": {
            "python": environment.python,
            "torch": environment.torch,
            "torchvision": environment.torchvision,
            "numpy": environment.numpy,
        },
        "device": {
            "type": environment.device_type,
            "name": environment.device_name,
            "torch_threads": environment.torch_threads,
        },
        # The processes the fine-tuning ran across (torchrun's ranks, one device each).
        "world_size": environment.world_size,
        "worker": {"host": platform.node(), "sandbox": sandbox.kind},
        "attempts": job.attempts,
    }


def _validation_manifest(finished: Finished) -> dict[str, Any] | None:
    """The split the best epoch was chosen on, and how it was drawn (a holdout's fraction and
    seed; an uploaded split has neither)."""
    validation = finished.dataset.validation
    return None if validation is None else validation.model_dump()


def _interpolation_manifest(job: Job) -> dict[str, Any] | None:
    interpolation = job.metrics.get("interpolation")
    if interpolation is None:
        return None
    return {"from_epoch": interpolation["from_epoch"], "fraction": interpolation["fraction"]}
