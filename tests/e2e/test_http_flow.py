"""The whole flow over HTTP against a real API server and a real worker: upload the digits
model, harden it, poll the job to `succeeded`, download the result; the downloaded model
resists PGD better than the uploaded one, as measured here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import torch
from api_server import ApiServer
from e2e_requests import create_api_key, digits_model_file, upload_digits_model
from model_rows import DIGITS_INPUT
from torch import nn
from worker_harness import WorkerProcess, torch_threads

from core.robust import ThreatModel, load_model
from core.robust.datasets.loading import DatasetSplits
from core.robust.evaluation import evaluate
from core.service.config import Settings


def pgd_accuracy(path: Path, digits: DatasetSplits) -> float:
    model = load_model(
        path, input_shape=DIGITS_INPUT, num_classes=10, architecture="builtin:digits_cnn"
    )
    with torch_threads(1):
        report = evaluate(
            model,
            digits.test,
            ThreatModel(norm="linf", epsilon=0.2),
            attack="fast",  # PGD-20 alone, as the name says
            attack_steps=20,
            max_samples=200,
            seed=7,
            sanity_checks=False,
            device="cpu",
        )
    return report.robust_accuracy


def poll_until_ended(
    client: httpx.Client, job_id: str, logs: list[Any], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {each.log_path}\n{each.log_tail()}" for each in logs)
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s\n{tails}")
        time.sleep(0.5)


def test_upload_harden_poll_download_over_http(
    running_service: tuple[ApiServer, WorkerProcess],
    service_settings: Settings,
    pretrained_cnn: nn.Module,
    digits: DatasetSplits,
    tmp_path: Path,
) -> None:
    api, worker = running_service
    key = create_api_key(service_settings, owner_name="e2e")
    uploaded = digits_model_file(pretrained_cnn, tmp_path)
    client = httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )

    with client:
        model_id = upload_digits_model(client, uploaded)
        response = client.post(
            "/v1/jobs",
            json={
                "kind": "harden",
                "model_id": model_id,
                "dataset": "builtin:digits",
                "threat_model": {"norm": "linf", "epsilon": 0.2, "step_size": None, "steps": 7},
                "hyperparameters": {"epochs": 4, "batch_size": 64},
                "evaluation": {"attack_steps": 10, "max_samples": 200},
                "seed": 0,
            },
        )
        assert response.status_code == 202, response.text
        job = poll_until_ended(client, response.json()["id"], [api, worker])
        assert job["status"] == "succeeded", job["error"]
        download = client.get(f"/v1/models/{job['result_model_id']}/content")

    assert download.status_code == 200
    hardened = tmp_path / "digits_cnn-robust.pt"
    hardened.write_bytes(download.content)
    assert job["metrics"]["after"]["robust_accuracy"] > job["metrics"]["before"]["robust_accuracy"]
    for report in (job["metrics"]["before"], job["metrics"]["after"]):
        # The headline is the standard ensemble's worst case, with its sample count and interval.
        assert report["attack"] == "standard" and report["num_samples"] == 200
        assert [stage["name"] for stage in report["stages"]][1:] == [
            "APGD-CE",
            "APGD-T (3 targets)",
        ]
        assert report["robust_accuracy"] <= report["pgd_accuracy"]
        low, high = report["confidence_intervals"]["robust_accuracy"]
        assert low <= report["robust_accuracy"] <= high and 0 < high - low < 0.2
    before, after = pgd_accuracy(uploaded, digits), pgd_accuracy(hardened, digits)
    assert after > before + 0.1, (before, after)
    assert (
        torch.load(hardened, weights_only=True).keys()
        == torch.load(uploaded, weights_only=True).keys()
    )
