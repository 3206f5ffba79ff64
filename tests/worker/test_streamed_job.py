"""A job on an uploaded ImageFolder archive: extracted once into the worker's cache, shown to the
sandboxed engine read-only, streamed by DataLoader workers there; a second job reuses the entry.
Run through core.service.jobs.pipeline in this process, the engine in its sandbox as in a worker."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from test_job_inputs import run_here
from worker_harness import Service, harden_config, worker_settings

from core.robust.datasets.loading import DatasetSplits
from core.service.config import Settings
from core.service.db import transaction
from core.service.ids import new_id
from core.service.jobs.lifecycle import SUCCEEDED
from core.service.sandbox.runner import sandbox_from_settings
from core.service.tables import Dataset

PER_CLASS = 30


def store_image_folder_dataset(service: Service, digits: DatasetSplits) -> str:
    """30 digits a class as 8x8 grayscale PNGs in class folders, zipped and registered."""
    images, labels = digits.train.tensors()
    dataset_id = new_id("ds")
    key = f"datasets/{dataset_id}/digits.zip"
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "digits.zip"
        with zipfile.ZipFile(archive, "w") as zipped:
            for label in range(10):
                chosen = (labels == label).nonzero()[:PER_CLASS, 0]
                for index in chosen.tolist():
                    pixels = (images[index, 0].numpy() * 255).round().astype(np.uint8)
                    png = Path(folder) / "image.png"
                    Image.fromarray(pixels).save(png)
                    zipped.write(png, f"digit{label}/{index:04d}.png")
        stored = service.context.store.put_file(key, archive)
    with transaction(service.context.sessions) as session:
        session.add(
            Dataset(
                id=dataset_id,
                owner_id=service.owner_id,
                name="digits-folders",
                kind="imagefolder",
                file_name="digits.zip",
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                storage_key=key,
                input_shape=[1, 8, 8],
                num_classes=10,
                train_size=10 * PER_CLASS * 4 // 5,
                test_size=10 * PER_CLASS // 5,
            )
        )
    return dataset_id


def test_streamed_image_folder_job_uses_the_cache_in_the_sandbox(
    embedded_settings: Settings,
    make_service: Callable[[Settings], Service],
    digits: DatasetSplits,
    tmp_path: Path,
) -> None:
    cache_dir = tmp_path / "dataset-cache"
    settings = worker_settings(
        embedded_settings,
        sandbox="auto",
        dataset_cache_dir=cache_dir,
        # Every split streams, decoded by two DataLoader processes inside the sandbox.
        dataset_stream_threshold_bytes=1,
        dataset_stream_workers=2,
    )
    # CI and the Dockerfile install bubblewrap: a host without it fails here, by design.
    assert sandbox_from_settings(settings).isolated, "needs the bubblewrap sandbox"
    service = make_service(settings)
    dataset_id = store_image_folder_dataset(service, digits)

    first = service.create_job(harden_config(epochs=1), dataset=dataset_id, enqueue=False)
    run_here(service, first)
    job = service.job(first)
    assert job.status == SUCCEEDED, job.error
    (entry,) = list(cache_dir.iterdir())
    assert (entry / "digit3").is_dir()
    inode = entry.stat().st_ino

    second = service.create_job(harden_config(epochs=1), dataset=dataset_id, enqueue=False)
    run_here(service, second)

    assert service.job(second).status == SUCCEEDED, service.job(second).error
    assert [path.stat().st_ino for path in cache_dir.iterdir()] == [inode]  # reused as it was
    train = 10 * PER_CLASS * 4 // 5
    assert job.manifest["dataset"]["train_size"] == train - 100  # 100 held out to validate on
    assert job.manifest["dataset"]["test_size"] == 10 * PER_CLASS // 5
