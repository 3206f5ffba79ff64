"""A harden job's precision through a real worker: "auto" on this CPU worker trains in fp32, an
explicit bf16 in bf16 (CPU autocast), and the job's metrics and manifest say which."""

from __future__ import annotations

from collections.abc import Callable

from worker_harness import Service, WorkerProcess, harden_config

from core.service.jobs.lifecycle import SUCCEEDED


def test_the_precision_trained_with_is_in_the_metrics_and_the_manifest(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    auto_id = embedded_service.create_job(harden_config(epochs=1, precision="auto"))
    bf16_id = embedded_service.create_job(harden_config(epochs=1, precision="bf16"))
    worker = start_worker(embedded_service.settings)

    auto = embedded_service.wait_for_job(auto_id, statuses={SUCCEEDED}, workers=[worker])
    bf16 = embedded_service.wait_for_job(bf16_id, statuses={SUCCEEDED}, workers=[worker])

    assert auto.metrics["precision"] == auto.manifest["precision"] == "fp32"  # a CPU worker
    assert bf16.metrics["precision"] == bf16.manifest["precision"] == "bf16"
    # The same job, seed and batches but for the arithmetic: the engine trained in bf16.
    auto_loss = auto.metrics["epochs"][0]["train_loss"]
    bf16_loss = bf16.metrics["epochs"][0]["train_loss"]
    assert auto_loss != bf16_loss
    assert abs(bf16_loss - auto_loss) < 0.05 * auto_loss
