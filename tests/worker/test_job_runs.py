"""A job through a real Celery worker process, on SQLite + filesystem broker and on
PostgreSQL + Redis: it succeeds, and the model it hands back resists PGD better."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from worker_harness import (
    Service,
    WorkerProcess,
    harden_config,
    torch_threads,
)

from core.robust import ThreatModel, load_model
from core.robust.datasets.loading import DatasetSplits, with_validation
from core.robust.evaluation import evaluate
from core.robust.measure import accuracy
from core.service import catalog
from core.service.jobs.lifecycle import SUCCEEDED

EPOCHS = 4


def pgd_accuracy(model: torch.nn.Module, digits: DatasetSplits) -> float:
    """Measured here, apart from the job's own evaluation: other seed, more attack steps."""
    threat = ThreatModel(norm="linf", epsilon=0.2)
    with torch_threads(1):
        report = evaluate(
            model, digits.test, threat, attack="fast", attack_steps=20, max_samples=200, seed=7,
            sanity_checks=False, device="cpu",
        )  # fmt: skip
    return report.robust_accuracy


def test_job_succeeds_and_the_hardened_model_resists_pgd_better(
    any_service: Service,
    start_worker: Callable[..., WorkerProcess],
    digits: DatasetSplits,
) -> None:
    job_id = any_service.create_job(harden_config(epochs=EPOCHS))
    worker = start_worker(any_service.settings)

    job = any_service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    assert job.attempts == 1 and job.error is None and job.result_model_id is not None
    hardened = any_service.model_row(job.result_model_id)
    assert hardened.owner_id == any_service.owner_id and hardened.source_job_id == job_id
    before = pgd_accuracy(any_service.load(any_service.model), digits)
    after = pgd_accuracy(any_service.load(hardened), digits)
    assert after > before + 0.1, (before, after)


def test_events_come_in_order_and_each_epoch_once(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    # A clean-accuracy allowance that this run keeps, so that no best-epoch warning comes in
    # between (the holdout flatters the uploaded model: 100% there).
    job_id = embedded_service.create_job(harden_config(epochs=EPOCHS, max_clean_drop=0.1))
    worker = start_worker(embedded_service.settings)

    embedded_service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    events = embedded_service.events(job_id)
    assert [event.type for event in events] == [
        "queued", "started", "evaluated", *["epoch"] * EPOCHS, "succeeded",
    ]  # fmt: skip
    assert [event.data["epoch"] for event in events if event.type == "epoch"] == [1, 2, 3, 4]
    (evaluated,) = [event.data for event in events if event.type == "evaluated"]
    low, high = evaluated["confidence_intervals"]["robust_accuracy"]
    assert low <= evaluated["robust_accuracy"] <= high and evaluated["num_samples"] > 0
    times = [event.created_at for event in events]
    assert times == sorted(times)
    checkpoints = embedded_service.checkpoints(job_id)
    assert [checkpoint.epoch for checkpoint in checkpoints] == [1, 2, 3, 4]
    for checkpoint in checkpoints:
        assert embedded_service.context.store.exists(checkpoint.storage_key)


def test_manifest_records_seed_versions_and_hashes(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    job_id = embedded_service.create_job(harden_config(epochs=2))
    worker = start_worker(embedded_service.settings)

    job = embedded_service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    manifest = job.manifest
    assert manifest["seed"] == 0 and manifest["config"] == job.config
    assert {"python", "torch", "torchvision", "numpy"} <= manifest["versions"].keys()
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["device"]["type"] == "cpu" and manifest["device"]["torch_threads"] == 1
    assert manifest["input_model"]["sha256"] == embedded_service.model.sha256
    assert job.result_model_id is not None
    output = embedded_service.model_row(job.result_model_id)
    stored = b"".join(embedded_service.context.store.open_range(output.storage_key))
    assert manifest["output_model"] == {"id": output.id, "sha256": output.sha256}
    assert hashlib.sha256(stored).hexdigest() == output.sha256
    # The split the best epoch was chosen on: 10% of digits' 1,437 training images, seeded.
    assert manifest["dataset"]["validation"] == {
        "source": "train_holdout", "size": 144, "fraction": 0.1, "seed": 0,
    }  # fmt: skip
    assert manifest["dataset"]["train_size"] == 1437 - 144


def test_epochs_are_validated_on_a_holdout_from_train_not_on_test(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess], digits: DatasetSplits
) -> None:
    job_id = embedded_service.create_job(harden_config(epochs=2))
    worker = start_worker(embedded_service.settings)

    job = embedded_service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    assert job.metrics["validation"] == {"source": "train_holdout", "size": 144}
    holdout = with_validation(digits, fraction=0.1, seed=0).val
    assert holdout is not None
    last = embedded_service.checkpoints(job_id)[-1]
    source = embedded_service.model
    weights_key = catalog.weights_key_beside(last.storage_key)
    with embedded_service.context.store.local_copy(weights_key) as weights:
        epoch_model = load_model(
            weights, input_shape=(1, 8, 8), num_classes=10,
            architecture=source.architecture, format=source.format,
        )  # fmt: skip
    with torch_threads(1):
        on_holdout = accuracy(epoch_model, holdout, batch_size=256, device=torch.device("cpu"))
        on_test = accuracy(epoch_model, digits.test, batch_size=256, device=torch.device("cpu"))
    assert last.metrics["val_clean_accuracy"] == on_holdout, (on_holdout, on_test)


def test_the_worker_parent_never_loads_torch(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    # CUDA must never be initialised in the parent of a prefork pool: its children inherit it.
    job_id = embedded_service.create_job(harden_config(epochs=1))
    worker = start_worker(embedded_service.settings)

    embedded_service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    parent_libraries = Path(f"/proc/{worker.pid}/maps").read_text()
    assert "libtorch" not in parent_libraries
