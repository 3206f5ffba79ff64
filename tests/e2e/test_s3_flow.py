"""The whole flow with the artifacts on a real S3 store (SeaweedFS), as across machines: an API
server and a worker on PostgreSQL + Redis, each with a data dir and a temp folder of its own
and no folder shared. The model and the dataset are uploaded through the API, a harden job
runs on the worker, its epoch checkpoints appear in the bucket while it runs, the result is
downloaded whole and in a range, equal to the object the bucket holds, and afterwards neither
process holds any artifact on its disk. And a client that drops its connection in the middle
of an upload leaves no object and no pending multipart upload behind."""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from api_server import ApiServer
from e2e_requests import create_api_key, digits_model_file, upload_digits_model
from seaweed import S3Artifacts
from torch import nn
from worker_harness import WorkerProcess, wait_for, with_private_queue, worker_settings

from core.robust.datasets.loading import DatasetSplits
from core.service import catalog
from core.service.config import Settings
from core.service.jobs.epochs import checkpoint_key
from core.service.storage.s3 import PART_BYTES

EPOCHS = 2


def digits_npz(digits: DatasetSplits) -> bytes:
    train_x, train_y = digits.train.tensors()
    test_x, test_y = digits.test.tensors()
    buffer = io.BytesIO()
    np.savez(
        buffer, x=train_x.numpy(), y=train_y.numpy(), x_test=test_x.numpy(), y_test=test_y.numpy()
    )
    return buffer.getvalue()


def files_under(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


class Machine:
    """One process's own disk: its data dir and its TMPDIR (where job folders and the upload
    check's local copies go), under `root`."""

    def __init__(self, root: Path) -> None:
        self.data_dir, self.temp_dir = root / "data", root / "tmp"
        self.temp_dir.mkdir(parents=True)


@pytest.fixture()
def s3_service(
    production_settings: Settings,
    s3_artifacts: S3Artifacts,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ApiServer, WorkerProcess, Machine, Machine]]:
    """The API server and one worker on the bucket, each with a machine of its own."""
    base = worker_settings(s3_artifacts.settings(with_private_queue(production_settings)))
    api_machine, worker_machine = Machine(tmp_path / "api"), Machine(tmp_path / "worker")
    # The processes inherit TMPDIR from this one's environment when they start.
    monkeypatch.setenv("TMPDIR", str(api_machine.temp_dir))
    api = ApiServer(
        base.model_copy(update={"data_dir": api_machine.data_dir}), tmp_path / "api.log"
    )
    monkeypatch.setenv("TMPDIR", str(worker_machine.temp_dir))
    worker = WorkerProcess(
        base.model_copy(update={"data_dir": worker_machine.data_dir}), tmp_path / "worker.log"
    )
    monkeypatch.delenv("TMPDIR")
    try:
        api.wait_healthy()
        yield api, worker, api_machine, worker_machine
    finally:
        worker.kill()
        api.stop()


def harden_body(model_id: str, dataset_id: str) -> dict[str, Any]:
    return {
        "kind": "harden",
        "model_id": model_id,
        "dataset": dataset_id,
        "threat_model": {"norm": "linf", "epsilon": 0.2, "step_size": None, "steps": 5},
        "hyperparameters": {"epochs": EPOCHS, "batch_size": 64},
        "evaluation": {"attack": "fast", "attack_steps": 5, "max_samples": 100},
        "seed": 0,
    }


def watch_job(
    client: httpx.Client,
    job_id: str,
    artifacts: S3Artifacts,
    processes: list[ApiServer | WorkerProcess],
    timeout: float = 240,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Poll the job to its end, listing the bucket before each poll; returns the job and, per
    checkpoint key, the job's status in the poll right after the key was first listed."""
    seen_while: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while True:
        listed = [key for key in artifacts.object_keys() if "/checkpoints/" in key]
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        for key in listed:
            seen_while.setdefault(key, job["status"])
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job, seen_while
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {each.log_path}\n{each.log_tail()}" for each in processes)
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s\n{tails}")
        time.sleep(0.1)


def test_upload_harden_and_download_with_the_artifacts_in_s3(
    s3_service: tuple[ApiServer, WorkerProcess, Machine, Machine],
    s3_artifacts: S3Artifacts,
    production_settings: Settings,
    pretrained_cnn: nn.Module,
    digits: DatasetSplits,
    tmp_path: Path,
) -> None:
    api, worker, api_machine, worker_machine = s3_service
    key = create_api_key(production_settings, owner_name="s3-e2e")
    model_file = digits_model_file(pretrained_cnn, tmp_path)
    client = httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )
    with client:
        model_id = upload_digits_model(client, model_file)
        npz = digits_npz(digits)
        response = client.post("/v1/datasets", files={"file": ("digits.npz", npz)})
        assert response.status_code == 201, response.text
        dataset = response.json()
        # Both uploads are objects in the bucket, byte for byte, and nowhere else.
        store = s3_artifacts.store()
        assert b"".join(store.open_range(catalog.model_key(model_id))) == model_file.read_bytes()
        assert [key for key in s3_artifacts.object_keys() if key.startswith("datasets/")] == [
            f"datasets/{dataset['id']}/data.npz"
        ]

        response = client.post("/v1/jobs", json=harden_body(model_id, dataset["id"]))
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        job, seen_while = watch_job(client, job_id, s3_artifacts, [api, worker])
        assert job["status"] == "succeeded", job["error"]

        # Each epoch's checkpoint and weights were in the bucket while the job still ran
        # (the first surely: the second epoch and the evaluation after came after it).
        first = checkpoint_key(job_id, attempt=1, epoch=1)
        assert seen_while[first] == "running", seen_while
        assert seen_while[catalog.weights_key_beside(first)] == "running", seen_while
        checkpoints = [checkpoint_key(job_id, attempt=1, epoch=e) for e in range(1, EPOCHS + 1)]
        expected = sorted([*checkpoints, *map(catalog.weights_key_beside, checkpoints)])
        job_keys = [key for key in s3_artifacts.object_keys() if key.startswith("jobs/")]
        assert job_keys == expected

        result_id = job["result_model_id"]
        stored = b"".join(store.open_range(catalog.model_key(result_id)))
        whole = client.get(f"/v1/models/{result_id}/content")
        assert whole.status_code == 200, whole.text
        assert whole.content == stored and len(stored) > 1000
        ranged = client.get(f"/v1/models/{result_id}/content", headers={"Range": "bytes=100-899"})
        assert ranged.status_code == 206, ranged.text
        assert ranged.headers["Content-Range"] == f"bytes 100-899/{len(stored)}"
        assert ranged.content == stored[100:900]

    assert s3_artifacts.pending_uploads() == []
    # The data dir holds no artifacts: with PostgreSQL and Redis, no file at all in either
    # process's data dir; the job folder and the upload check's copies are gone from TMPDIR.
    assert files_under(api_machine.data_dir) == []
    assert files_under(worker_machine.data_dir) == []
    # The job folder goes when the worker leaves the job, just after its end is committed.
    wait_for(
        lambda: files_under(worker_machine.temp_dir) == [],
        timeout=30,
        what="the worker to remove the job's folder from its temp folder",
    )
    assert files_under(api_machine.temp_dir) == []


def test_an_upload_whose_client_goes_away_leaves_no_part_in_the_bucket(
    embedded_settings: Settings, s3_artifacts: S3Artifacts, tmp_path: Path
) -> None:
    settings = worker_settings(s3_artifacts.settings(embedded_settings))
    api = ApiServer(settings, tmp_path / "api.log")
    try:
        api.wait_healthy()
        key = create_api_key(settings, owner_name="s3-e2e")
        sent = PART_BYTES + 2 * 1024 * 1024  # a first part goes to the bucket, then the cut
        form = b'--b\r\nContent-Disposition: form-data; name="file"; filename="m.pt"\r\n\r\n'
        head = (
            "POST /v1/models HTTP/1.1\r\nHost: api\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(form) + 2 * sent}\r\n\r\n"  # it promises twice as much
        ).encode()
        with socket.create_connection(("127.0.0.1", api.port)) as client:
            client.sendall(head + form + os.urandom(sent))
            wait_for(s3_artifacts.pending_uploads, timeout=30, what="the upload's first part in S3")
        # The connection is closed mid-body: the API aborts the multipart upload.
        wait_for(
            lambda: not s3_artifacts.pending_uploads(),
            timeout=30,
            what=f"the aborted upload to go; the API's log:\n{api.log_tail()}",
        )
        assert s3_artifacts.object_keys() == []
    finally:
        api.stop()
