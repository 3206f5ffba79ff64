"""The load phase: find the job's model, and copy its inputs (model, dataset, the last
checkpoint to resume from) into the job folder with the request the engine reads there."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.service.engine.protocol import MODEL_FILE, REQUEST_FILE, RESUME_FILE
from core.service.errors import DatasetError, ModelLoadError
from core.service.jobs.dataset_cache import DatasetCache
from core.service.jobs.epochs import checkpoint_rows
from core.service.jobs.run_context import JobContext
from core.service.sandbox.runner import Sandbox
from core.service.tables import Dataset, Model

# Built from scikit-learn's bundled digits, which lie inside the sandbox's read-only Python
# folders: nothing to stage.
BUNDLED_DATASETS = frozenset({"builtin:digits", "builtin:digits32"})


def load_model_row(context: JobContext) -> Model:
    """The job's model row, whose file the store still holds."""
    job = context.job
    with context.factory() as session:
        row = session.get(Model, job.model_id) if job.model_id else None
    if row is None or not context.store.exists(row.storage_key):
        raise ModelLoadError(f"the job's model {job.model_id} no longer exists")
    return row


def model_description(model: Model) -> dict[str, Any]:
    """What the engine needs to load a model file, and what a model made from it inherits."""
    return {
        "format": model.format,
        "architecture": model.architecture,
        "input_shape": model.input_shape,
        "num_classes": model.num_classes,
        "mean": model.mean,
        "std": model.std,
    }


def stage_inputs(
    context: JobContext, job_dir: Path, model_row: Model, sandbox: Sandbox
) -> list[Path]:
    """Copy the job's inputs into its folder and write the request; returns the inputs,
    which the sandbox shows read-only. Nothing else of the worker's is visible there."""
    store = context.store
    inputs = [job_dir / REQUEST_FILE, job_dir / MODEL_FILE]
    store.copy_to(model_row.storage_key, job_dir / MODEL_FILE)
    dataset = _stage_dataset(context, job_dir, sandbox)
    if dataset["file"] is not None:
        inputs.append(job_dir / dataset["file"])
    if dataset["folder"] is not None:
        inputs.append(Path(dataset["folder"]))
    rows = checkpoint_rows(context)
    context.epochs_done = len(rows)
    if rows:
        store.copy_to(rows[-1].storage_key, job_dir / RESUME_FILE)
        inputs.append(job_dir / RESUME_FILE)
    request = _engine_request(context, model_row, dataset, resume=bool(rows))
    (job_dir / REQUEST_FILE).write_text(json.dumps(request))
    return inputs


def _engine_request(
    context: JobContext, model_row: Model, dataset: dict[str, Any], *, resume: bool
) -> dict[str, Any]:
    job, settings = context.job, context.settings
    return {
        "job_id": job.id,
        "kind": job.kind,
        "config": job.config,
        "model": model_description(model_row),
        "dataset": dataset,
        "resume": resume,
        "has_before": job.metrics.get("before") is not None,
        "device": settings.worker_device,
        # Every run of a job uses the same count: a resumed run ends bit-identical only so.
        "threads": settings.torch_threads or len(os.sched_getaffinity(0)),
        "memory_bytes": settings.job_memory_bytes,
    }


def _stage_dataset(context: JobContext, job_dir: Path, sandbox: Sandbox) -> dict[str, Any]:
    """Where the engine reads the job's dataset: a file copied into the job folder (`file`),
    an ImageFolder archive's folder in the worker's cache (`folder`), or a builtin `name`."""
    settings = context.settings
    name = context.job.dataset
    nothing = {"file": None, "folder": None, "data_dir": None, "allow_download": False}
    streaming = {
        "stream_threshold_bytes": settings.dataset_stream_threshold_bytes,
        "stream_workers": settings.dataset_stream_workers,
    }
    if name in BUNDLED_DATASETS:
        return {**nothing, **streaming, "name": name}
    if name.startswith("builtin:"):
        if sandbox.isolated:
            # The sandbox shows only the job folder; a torchvision set is too large to copy
            # for every attempt, and the sandbox binds nothing outside the folder.
            raise DatasetError(
                f"{name} is read from the worker's datasets folder, which this worker's "
                "sandbox does not reach; upload the data as a dataset (.npz or an "
                "ImageFolder archive) and use its ds_ id"
            )
        return {
            **nothing,
            **streaming,
            "name": name,
            "data_dir": str(settings.resolved_datasets_dir),
            "allow_download": settings.allow_download,
        }
    with context.factory() as session:
        row = session.get(Dataset, name)
    if (
        row is None
        or row.owner_id != context.job.owner_id
        or not context.store.exists(row.storage_key)
    ):
        raise DatasetError(f"the job's dataset {name} no longer exists")
    if row.kind == "imagefolder":
        cache = DatasetCache(
            settings.resolved_dataset_cache_dir,
            max_bytes=settings.dataset_cache_max_bytes,
            # A job may read its entry for as long as a job may run.
            in_use_seconds=settings.task_time_limit_seconds,
        )
        storage_key = row.storage_key
        folder = cache.extracted(
            row.sha256, fetch_archive=lambda path: context.store.copy_to(storage_key, path)
        )
        return {**nothing, **streaming, "name": name, "folder": str(folder)}
    # The stored name keeps the upload's suffix (.npz, .tar.gz), which says how to read it.
    file_name = row.storage_key.rsplit("/", 1)[-1]
    context.store.copy_to(row.storage_key, job_dir / file_name)
    return {**nothing, **streaming, "name": name, "file": file_name}
