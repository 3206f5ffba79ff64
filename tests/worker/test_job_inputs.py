"""What a job's engine is handed in its sandbox: an uploaded dataset is staged into the job
folder (read-only there); a torchvision builtin, which lives outside it, is refused by name.
Run through core.service.jobs.pipeline in this process, the engine in its sandbox as in a worker."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from worker_harness import Service, harden_config, worker_settings

from core.robust.datasets.loading import DatasetSplits
from core.service.config import Settings
from core.service.db import transaction
from core.service.ids import new_id
from core.service.jobs.lifecycle import FAILED, SUCCEEDED
from core.service.jobs.pipeline import run_job
from core.service.sandbox.runner import sandbox_from_settings
from core.service.tables import Dataset


def run_here(service: Service, job_id: str) -> None:
    run_job(
        job_id,
        settings=service.settings,
        factory=service.context.sessions,
        store=service.context.store,
        worker_id=f"test:{os.getpid()}",
    )


def store_npz_dataset(
    service: Service, digits: DatasetSplits, *, arrays: dict[str, np.ndarray] | None = None
) -> str:
    """The digits images as an uploaded .npz (by default no test split of its own), registered."""
    images = np.concatenate([digits.train.tensors()[0].numpy(), digits.test.tensors()[0].numpy()])
    labels = np.concatenate([digits.train.tensors()[1].numpy(), digits.test.tensors()[1].numpy()])
    dataset_id = new_id("ds")
    key = f"datasets/{dataset_id}/data.npz"
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "data.npz"
        np.savez(local, **(arrays or {"x": images, "y": labels}))
        stored = service.context.store.put_file(key, local)
    with transaction(service.context.sessions) as session:
        session.add(
            Dataset(
                id=dataset_id,
                owner_id=service.owner_id,
                name="digits-upload",
                kind="npz",
                file_name="data.npz",
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                storage_key=key,
                input_shape=[1, 8, 8],
                num_classes=10,
                train_size=1437,
                test_size=360,
            )
        )
    return dataset_id


def test_job_on_an_uploaded_dataset_reads_it_in_its_job_folder(
    embedded_service: Service, digits: DatasetSplits
) -> None:
    service = embedded_service
    dataset_id = store_npz_dataset(service, digits)
    job_id = service.create_job(harden_config(epochs=1), dataset=dataset_id, enqueue=False)

    run_here(service, job_id)

    job = service.job(job_id)
    assert job.status == SUCCEEDED, job.error
    # Trained on what is left once 10% of train (144 images) is held out for validation.
    assert job.manifest["dataset"] == {
        "name": dataset_id, "train_size": 1437 - 144, "test_size": 360,
        "validation": {"source": "train_holdout", "size": 144, "fraction": 0.1, "seed": 0},
    }  # fmt: skip


def test_an_npz_with_its_own_validation_split_is_validated_on_it(
    embedded_service: Service, digits: DatasetSplits
) -> None:
    service = embedded_service
    images, labels = (array.numpy() for array in digits.train.tensors())
    dataset_id = store_npz_dataset(
        service,
        digits,
        arrays={
            "x": images[150:], "y": labels[150:], "x_val": images[:150], "y_val": labels[:150],
            "x_test": digits.test.tensors()[0].numpy(), "y_test": digits.test.tensors()[1].numpy(),
        },
    )  # fmt: skip
    job_id = service.create_job(harden_config(epochs=1), dataset=dataset_id, enqueue=False)

    run_here(service, job_id)

    job = service.job(job_id)
    assert job.status == SUCCEEDED, job.error
    assert job.metrics["validation"] == {"source": "uploaded", "size": 150}
    assert job.manifest["dataset"]["train_size"] == 1437 - 150  # nothing more held out
    assert job.metrics["verdict"] in ("improved", "clean_dropped", "not_improved")


def test_torchvision_builtin_is_refused_by_name_in_the_sandbox(
    embedded_settings: Settings, make_service: Callable[[Settings], Service]
) -> None:
    settings = worker_settings(embedded_settings, sandbox="auto")
    # CI and the Dockerfile install bubblewrap: a host without it fails here, by design.
    assert sandbox_from_settings(settings).isolated, "needs the bubblewrap sandbox"
    service = make_service(settings)
    job_id = service.create_job(harden_config(epochs=1), dataset="builtin:mnist", enqueue=False)

    run_here(service, job_id)

    job = service.job(job_id)
    assert job.status == FAILED and job.error is not None
    assert job.error["code"] == "invalid_dataset"
    assert "builtin:mnist" in job.error["message"] and "upload the data" in job.error["message"]
