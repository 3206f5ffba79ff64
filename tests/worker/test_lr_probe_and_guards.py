"""The learning-rate probe and the guards, through a real worker and its sandboxed engine:
what they decided reaches the job's events, metrics and report."""

from __future__ import annotations

from collections.abc import Callable

from worker_harness import Service, WorkerProcess, harden_config

from api.report import render_report
from core.robust.optimizers import BASE_RATES, candidate_rates
from core.service.jobs.lifecycle import SUCCEEDED


def test_a_job_without_peak_lr_probes_and_reports_the_probe(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = embedded_service
    job_id = service.create_job(harden_config(epochs=2, peak_lr=None))
    worker = start_worker(service.settings)

    job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    probe = job.metrics["lr_probe"]
    assert [trial["lr"] for trial in probe["trials"]] == candidate_rates(64)
    assert job.metrics["peak_lr"] == probe["chosen_lr"]
    # The digits CNN has no LayerNorm: "auto" fine-tunes it with SGD, and says so.
    assert job.metrics["optimizer"] == "sgd" == job.manifest["optimizer"]
    assert probe["gradient_passes"] > 0 and probe["budget_fraction"] > 0
    # Training ran at the chosen rate: the schedule peaks at it at the end of epoch 1 of 2.
    assert job.metrics["epochs"][0]["lr"] <= probe["chosen_lr"] * 1.0001
    events = [event for event in service.events(job_id) if event.type == "lr_probe"]
    assert len(events) == 1 and f"peak_lr {probe['chosen_lr']:.3g}" in events[0].message
    assert "of the training's" in events[0].message
    html = render_report(job)
    assert 'id="learning-rate"' in html and f"{len(BASE_RATES['sgd'])}" in html


def test_an_absurd_rate_is_stepped_back_stopped_early_and_not_improved(
    embedded_service: Service, start_worker: Callable[..., WorkerProcess]
) -> None:
    service = embedded_service
    job_id = service.create_job(harden_config(epochs=3, peak_lr=10.0))
    worker = start_worker(service.settings)

    job = service.wait_for_job(job_id, statuses={SUCCEEDED}, workers=[worker])

    decisions = job.metrics["guards"]
    assert [d["action"] for d in decisions] == ["stepped_back", "stepped_back", "stopped"]
    assert job.metrics["stopped_early"] is True
    assert len(job.metrics["epochs"]) < 3
    assert job.metrics["verdict"] != "improved"
    events = [event for event in service.events(job_id) if event.type == "guard"]
    assert [event.data["action"] for event in events] == [d["action"] for d in decisions]
    assert 'id="guards"' in render_report(job)
