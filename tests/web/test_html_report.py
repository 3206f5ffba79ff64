"""The HTML robustness report, rendered from jobs run for real in this process
(core.service.jobs.pipeline on the embedded parts), and GET /v1/jobs/{id}/report: the owner's HTML,
another owner's 404."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from torch import nn
from web_harness import Owner, make_owner

from api.app import create_app
from api.report import render_report
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.tables import Job, Model


@pytest.fixture()
def client(owner: Owner) -> Iterator[TestClient]:
    with TestClient(create_app(owner.settings)) as test_client:
        yield test_client


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def table_row(html: str, metric: str) -> str:
    match = re.search(rf'<tr data-metric="{metric}">(.*?)</tr>', html)
    assert match is not None, f"no {metric} row"
    return match.group(1)


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must load nothing"
    assert "<link" not in html


def job_view(job: Job, **changes: Any) -> SimpleNamespace:
    """The job's columns as plain data, some changed: what render_report reads."""
    names = (
        "id kind status model_id dataset config progress metrics manifest error "
        "result_model_id created_at finished_at"
    ).split()
    return SimpleNamespace(**{name: getattr(job, name) for name in names} | changes)


def test_owner_gets_the_report_of_a_hardened_job_as_html(owner: Owner, client: TestClient):
    with transaction(owner.context.sessions) as session:
        model = session.get(Model, owner.model.id)
        assert model is not None
        model.name = "digits <script>alert(1)</script>"
    job = owner.run(owner.create_job(epochs=3))
    assert job.status == "succeeded", job.error

    response = client.get(f"/v1/jobs/{job.id}/report", headers=owner.headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert_self_contained(html)
    before, after = job.metrics["before"], job.metrics["after"]
    for metric in ("clean_accuracy", "fgsm_accuracy", "robust_accuracy"):
        row = table_row(html, metric)
        assert percent(before[metric]) in row and percent(after[metric]) in row
    assert "PGD-10 (linf, eps 0.2)" in html
    assert html.count("<svg") == 2  # the epoch curves, accuracy against epsilon
    assert re.findall(r'<tr data-epoch="(\d+)"', html) == ["1", "2", "3"]
    assert 'id="warnings"' in html and 'id="checks"' in html
    assert "large epsilon reaches chance" in html
    assert 'id="manifest"' in html
    assert job.manifest["output_model"]["sha256"] in html
    assert job.manifest["versions"]["torch"] in html
    assert "digits &lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_other_owner_gets_404(owner: Owner, client: TestClient, pretrained_cnn: nn.Module):
    job_id = owner.create_job()
    mallory = make_owner(owner.settings, pretrained_cnn, "mallory")

    response = client.get(f"/v1/jobs/{job_id}/report", headers=mallory.headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_report_needs_an_api_key(owner: Owner, client: TestClient):
    response = client.get(f"/v1/jobs/{owner.create_job()}/report")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_report_of_a_cancelled_job_shows_the_epochs_its_checkpoints_recorded(
    owner: Owner, client: TestClient
):
    job_id = owner.create_job(epochs=20, batch_size=32)
    runner = threading.Thread(target=owner.run, args=(job_id,))
    runner.start()
    deadline = time.monotonic() + 120
    while not owner.checkpoints(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    with transaction(owner.context.sessions) as session:
        lifecycle.request_cancel(session, owner_id=owner.owner_id, job_id=job_id)
    runner.join(timeout=120)
    job, checkpoints = owner.job(job_id), owner.checkpoints(job_id)
    assert job.status == "cancelled" and checkpoints and len(checkpoints) < 20

    html = client.get(f"/v1/jobs/{job_id}/report", headers=owner.headers).text

    assert "The job cancelled" in html
    assert html.count("<svg") == 2
    epochs = re.findall(r'<tr data-epoch="(\d+)"', html)
    assert epochs == [str(row.epoch) for row in checkpoints]
    assert "<th>after</th>" not in html
    assert percent(job.metrics["before"]["robust_accuracy"]) in table_row(html, "robust_accuracy")


@pytest.fixture(scope="module")
def evaluated(module_owner: Owner) -> Job:
    """An evaluate job run to its end, once for the tests that render reports from it (each
    changes only copies of its metrics)."""
    job = module_owner.run(module_owner.create_job(kind="evaluate"))
    assert job.status == "succeeded", job.error
    return job


def test_report_of_an_evaluate_job_shows_the_one_evaluation(evaluated: Job):
    job = evaluated

    html = render_report(job)

    assert_self_contained(html)
    assert percent(job.metrics["before"]["clean_accuracy"]) in table_row(html, "clean_accuracy")
    assert "<th>after</th>" not in html
    assert 'id="training"' not in html
    assert html.count("<svg") == 1  # accuracy against epsilon
    assert job.manifest["input_model"]["sha256"] in html


def test_report_of_a_running_job_says_so_and_shows_its_epochs(owner: Owner):
    job = owner.run(owner.create_job(epochs=2))
    running = job_view(
        job,
        status="running",
        finished_at=None,
        manifest={},
        metrics={"before": job.metrics["before"]},
        progress={"phase": "training", "epoch": 2, "epochs": 2, "fraction": 0.6},
    )

    html = render_report(running, epochs=job.metrics["epochs"][:1])

    assert "This job is running" in html and "epoch 2 of 2" in html
    assert html.count("<svg") == 2
    assert "<th>after</th>" not in html
    assert "Written when the job succeeds" in html


def test_report_of_a_failed_job_shows_its_error(owner: Owner):
    owner.context.store.delete(owner.model.storage_key)
    job = owner.run(owner.create_job())
    assert job.status == "failed"

    html = render_report(job)

    assert "The job failed" in html
    assert job.error is not None
    assert job.error["code"] in html and owner.model.id in html


def test_failed_sanity_check_is_shown_as_a_gradient_masking_warning(evaluated: Job):
    job = evaluated
    before = dict(job.metrics["before"])
    before["checks"] = [dict(check) for check in before["checks"]]
    before["checks"][2].update(passed=False, detail="PGD: <0.9>, FGSM: 0.5")

    html = render_report(job_view(job, metrics={"before": before}))

    warnings = html[
        html.index('id="warnings"') : html.index("</section>", html.index('id="warnings"'))
    ]
    assert "possible gradient masking" in warnings
    assert before["checks"][2]["name"] in warnings
    assert "PGD: &lt;0.9&gt;, FGSM: 0.5" in warnings
    assert "FAILED" in html


def section(html: str, section_id: str) -> str:
    start = html.index(f'id="{section_id}"')
    return html[html.rfind("<section", 0, start) : html.index("</section>", start)]


@pytest.mark.parametrize(
    ("verdict", "box"),
    [("improved", "ok"), ("clean_dropped", "error"), ("not_improved", "warning")],
)
def test_banner_shows_the_verdict_and_is_green_only_over_an_improved_model(
    evaluated: Job, verdict: str, box: str
):
    job = evaluated
    metrics = {**job.metrics, "after": job.metrics["before"], "verdict": verdict}

    html = render_report(job_view(job, kind="harden", metrics=metrics))

    assert f'class="box {box}"' in section(html, "verdict")
    sanity = section(html, "warnings")
    assert "Every sanity check" in sanity
    assert ("box ok" in sanity) == (verdict == "improved")
    assert ('class="status succeeded"' in html) == (verdict == "improved")
    assert "box ok" not in html.replace(section(html, "verdict"), "") or verdict == "improved"


def test_an_interpolation_that_kept_no_mix_says_the_best_epochs_weights_stayed(evaluated: Job):
    job = evaluated
    trials = [
        {"fraction": f, "val_clean_accuracy": 0.9, "val_robust_accuracy": r, "kept_clean": False}
        for f, r in ((0.5, 0.3), (0.25, 0.2), (0.125, 0.1), (0.0625, 0.05))
    ]
    interpolation = {
        "from_epoch": 2, "fraction": None, "val_clean_accuracy": 0.85,
        "val_robust_accuracy": 0.4, "trials": trials, "message": "epoch 2's weights stay",
    }  # fmt: skip
    metrics = {**job.metrics, "after": job.metrics["before"], "best_epoch": 2}
    metrics["interpolation"] = interpolation

    html = render_report(job_view(job, kind="harden", metrics=metrics))

    shown = section(html, "interpolation")
    assert 'class="box warning"' in shown
    assert "No mix kept clean accuracy: epoch 2's weights were handed back" in shown
    assert shown.count("<td>no</td>") == 4 and 'class="best"' not in shown
    assert "model handed back</dt><dd>epoch 2 (" in html
