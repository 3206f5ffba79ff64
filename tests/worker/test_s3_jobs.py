"""Jobs with the artifacts on a real S3 store (SeaweedFS), run by real worker processes: a
worker SIGKILLed mid-job, whose job another worker resumes from the last epoch checkpoint in
the bucket (as test_faults.test_killed_worker_resumes_from_last_checkpoint does on a folder),
and an ImageFolder dataset fetched from the bucket into the worker's bounded cache, the one
thing of the job's that stays on the worker's disk."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from seaweed import S3Artifacts
from test_faults import RESUMED_CONFIG, RESUMED_EPOCHS, state_of, uninterrupted
from test_streamed_job import store_image_folder_dataset
from worker_harness import Service, WorkerProcess, harden_config, wait_for, worker_settings

from core.robust.datasets.loading import DatasetSplits
from core.service import catalog
from core.service.config import Settings
from core.service.jobs.epochs import checkpoint_key
from core.service.jobs.lifecycle import RUNNING, SUCCEEDED
from core.service.jobs.sweeper import Sweeper
from core.service.storage.s3 import S3ArtifactStore
from core.service.tables import Dataset

__all__ = ["uninterrupted"]  # the reference run's fixture, shared with test_faults


@pytest.fixture()
def s3_service(
    embedded_settings: Settings,
    s3_artifacts: S3Artifacts,
    make_service: Callable[[Settings], Service],
) -> Service:
    """The embedded database and broker, the artifacts in the bucket (the model put there)."""
    return make_service(worker_settings(s3_artifacts.settings(embedded_settings)))


def test_killed_worker_resumes_from_the_last_checkpoint_in_the_bucket(
    s3_service: Service,
    s3_artifacts: S3Artifacts,
    uninterrupted: dict[str, torch.Tensor],
    start_worker: Callable[..., WorkerProcess],
    start_sweeper: Callable[[Service], Sweeper],
) -> None:
    service = s3_service
    assert isinstance(service.context.store, S3ArtifactStore)
    job_id = service.create_job(RESUMED_CONFIG)
    start_sweeper(service)
    first = start_worker(service.settings)
    wait_for(lambda: service.checkpoints(job_id), timeout=240, what="a first checkpoint")

    first.kill()

    done = len(service.checkpoints(job_id))
    assert 1 <= done < RESUMED_EPOCHS, "the worker was not killed mid-job"
    assert service.job(job_id).status == RUNNING
    in_bucket = [key for key in s3_artifacts.object_keys() if key.startswith("jobs/")]
    first_attempt = [checkpoint_key(job_id, attempt=1, epoch=e) for e in range(1, done + 1)]
    # What the next attempt resumes from is in the bucket (a kill between an epoch's files and
    # its row may leave that epoch's files too: that epoch is trained again under attempt 2).
    assert set(first_attempt) <= set(in_bucket)
    second = start_worker(service.settings)
    job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[first, second])

    assert job.attempts == 2
    events = service.events(job_id)
    epochs = list(range(1, RESUMED_EPOCHS + 1))
    assert [event.data["epoch"] for event in events if event.type == "epoch"] == epochs
    second_attempt = [
        checkpoint_key(job_id, attempt=2, epoch=e) for e in range(done + 1, RESUMED_EPOCHS + 1)
    ]
    checkpoints = service.checkpoints(job_id)
    assert [row.storage_key for row in checkpoints] == first_attempt + second_attempt
    store = s3_artifacts.store()
    for row in checkpoints:  # every row's object is in the bucket, as its row describes it
        stat = store.stat(row.storage_key)
        assert stat is not None and stat.size_bytes == row.size_bytes
        assert store.exists(catalog.weights_key_beside(row.storage_key))
    assert s3_artifacts.pending_uploads() == []
    # Resumed, not restarted: the weights of the run that was never interrupted.
    resumed = state_of(service, job.result_model_id)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), f"{name} differs from the uninterrupted run"
    # Nothing of the job went to a folder: the data dir has no artifact folder.
    assert not (service.settings.data_dir / "artifacts").exists()


def test_an_image_folder_dataset_comes_from_the_bucket_into_the_bounded_cache(
    embedded_settings: Settings,
    s3_artifacts: S3Artifacts,
    make_service: Callable[[Settings], Service],
    start_worker: Callable[..., WorkerProcess],
    digits: DatasetSplits,
) -> None:
    bound = 4 * 1024**2
    settings = worker_settings(
        s3_artifacts.settings(embedded_settings), dataset_cache_max_bytes=bound
    )
    service = make_service(settings)
    dataset_id = store_image_folder_dataset(service, digits)
    with service.context.sessions() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
    assert s3_artifacts.store().stat(dataset.storage_key) is not None  # in the bucket
    job_id = service.create_job(harden_config(epochs=1), dataset=dataset_id)
    worker = start_worker(settings)

    job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    assert job.manifest["dataset"]["train_size"] == 240 - 100  # 100 held out to validate on
    data_dir = settings.data_dir
    files = [path.relative_to(data_dir) for path in data_dir.rglob("*") if path.is_file()]
    cached = [path for path in files if path.parts[0] == "dataset-cache"]
    # Besides the SQLite database (and its WAL) and the filesystem broker, only the dataset.
    local = {"robustify.db", "robustify.db-wal", "robustify.db-shm", "broker"}
    assert {path.parts[0] for path in files} - local == {"dataset-cache"}
    entries = {path.parts[1] for path in cached}
    assert entries == {dataset.sha256}  # one entry, the archive extracted, not kept
    assert not any(path.suffix == ".zip" for path in cached)
    assert sum((data_dir / path).stat().st_size for path in cached) <= bound
    assert any(path.parts[2] == "digit3" for path in cached)
    assert [key for key in s3_artifacts.object_keys() if key.startswith("jobs/")] == [
        f"jobs/{job_id}/checkpoints/attempt-1/epoch-0001.model",
        f"jobs/{job_id}/checkpoints/attempt-1/epoch-0001.pt",
    ]
