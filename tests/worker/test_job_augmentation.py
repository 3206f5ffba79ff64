"""A harden job's augmentation through a real worker: the one asked for, or the data's choice
for null ("auto"), is what the engine trained with, and the job's metrics and manifest say so."""

from __future__ import annotations

from collections.abc import Callable

from worker_harness import Service, WorkerProcess, harden_config

from core.service.jobs.lifecycle import SUCCEEDED


def test_the_augmentation_trained_with_is_in_the_metrics_and_the_manifest(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    cropped_id = embedded_service.create_job(harden_config(epochs=1, augmentation="standard"))
    auto_id = embedded_service.create_job(harden_config(epochs=1, augmentation=None))
    worker = start_worker(embedded_service.settings)

    cropped = embedded_service.wait_for_job(cropped_id, statuses={SUCCEEDED}, workers=[worker])
    auto = embedded_service.wait_for_job(auto_id, statuses={SUCCEEDED}, workers=[worker])

    assert cropped.metrics["augmentation"] == cropped.manifest["augmentation"] == "standard"
    # builtin:digits, left to the data: none (a mirrored digit is no digit).
    assert auto.config["hyperparameters"]["augmentation"] is None
    assert auto.metrics["augmentation"] == auto.manifest["augmentation"] == "none"
    # The same job, seed and batches but for the crops and flips: the engine applied them.
    cropped_loss = cropped.metrics["epochs"][0]["train_loss"]
    assert cropped_loss != auto.metrics["epochs"][0]["train_loss"]
