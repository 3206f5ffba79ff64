"""Weight interpolation through a real worker and its sandboxed engine: when no epoch kept clean
accuracy, the mix with the uploaded weights handed back reaches the job's events, metrics,
manifest and report; switched off, there is none."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker_harness import Service, WorkerProcess, harden_config

from api.report import render_report
from core.service.jobs.lifecycle import SUCCEEDED


def losing_config(**hyperparameters: Any) -> dict[str, Any]:
    """A run whose every epoch loses more validation clean accuracy than max_clean_drop allows:
    a high rate, three short epochs, and 1% of clean accuracy to spend (the digits CNN's
    holdout: every epoch ends at least 5 points below the uploaded model's)."""
    return harden_config(epochs=3, peak_lr=0.1, max_clean_drop=0.01, **hyperparameters)


def test_a_run_that_lost_clean_accuracy_hands_back_a_mix_and_reports_it(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = embedded_service
    job_id = service.create_job(losing_config())
    worker = start_worker(service.settings)

    job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    interpolation = job.metrics["interpolation"]
    fraction = interpolation["fraction"]
    assert fraction is not None and 0 < fraction < 1
    assert interpolation["from_epoch"] == job.metrics["best_epoch"]
    kept = [trial for trial in interpolation["trials"] if trial["kept_clean"]]
    # The most robust of the kept mixes (the more tuned on a tie) is the one handed back.
    most_robust = max(kept, key=lambda trial: (trial["val_robust_accuracy"], trial["fraction"]))
    assert kept and fraction == most_robust["fraction"]
    choice = job.metrics["best_epoch_choice"]
    assert choice["meets_clean_constraint"] is True
    reference = choice["reference_clean_accuracy"]
    assert interpolation["val_clean_accuracy"] >= reference - 0.01
    # The mix hands back clean accuracy the best epoch itself had lost.
    best = job.metrics["epochs"][job.metrics["best_epoch"] - 1]
    assert best["val_clean_accuracy"] < reference - 0.01
    events = [event for event in service.events(job_id) if event.type == "interpolation"]
    assert len(events) == 1 and events[0].message == f"interpolation: {interpolation['message']}"
    assert events[0].data["fraction"] == fraction
    assert job.manifest["interpolation"] == {
        "from_epoch": interpolation["from_epoch"],
        "fraction": fraction,
    }
    html = render_report(job)
    assert 'id="interpolation"' in html and f"<strong>{fraction:.3g}</strong>" in html
    assert f"handed back</dt><dd>{fraction:.3g} of the way from the uploaded weights" in html


def test_a_run_without_weight_interpolation_hands_back_the_best_epoch(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = embedded_service
    job_id = service.create_job(losing_config(weight_interpolation=False))
    worker = start_worker(service.settings)

    job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    assert "interpolation" not in job.metrics
    assert job.manifest["interpolation"] is None
    assert job.metrics["best_epoch_choice"]["meets_clean_constraint"] is False
    types = [event.type for event in service.events(job_id)]
    assert "interpolation" not in types and "warning" in types
    assert 'id="interpolation"' not in render_report(job)
