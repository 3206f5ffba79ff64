"""The Python SDK against a running embedded service (`robustify up`): models, datasets, jobs,
events (paged and SSE), checkpoints, the report, and the API's errors as exceptions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from service_harness import DIGITS_INPUT, RunningService

from core.robust import load_model
from robustify import (
    ApiError,
    ApiUnavailable,
    Client,
    EvaluationOptions,
    Event,
    Hyperparameters,
    Job,
    Model,
    ThreatModelOptions,
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upload_digits(client: Client, path: Path) -> Model:
    return client.models.upload(
        path, input_shape=list(DIGITS_INPUT), num_classes=10, architecture="builtin:digits_cnn"
    )


def test_upload_list_get_download_round_trip_keeps_the_bytes(
    running_service: RunningService, digits_model_file: Path, tmp_path: Path
) -> None:
    uploaded_progress: list[tuple[int, int | None]] = []
    downloaded_progress: list[tuple[int, int | None]] = []
    with running_service.client() as client:
        model = client.models.upload(
            digits_model_file,
            name="round-trip",
            input_shape=list(DIGITS_INPUT),
            num_classes=10,
            architecture="builtin:digits_cnn",
            on_progress=lambda done, total: uploaded_progress.append((done, total)),
        )
        listed = [each.id for each in client.models.list()]
        shown = client.models.get(model.id)
        path = client.models.download(
            model.id,
            tmp_path / "downloaded.pt",
            on_progress=lambda done, total: downloaded_progress.append((done, total)),
        )

    size = digits_model_file.stat().st_size
    assert model.id.startswith("mdl_") and model.id in listed
    assert (shown.name, shown.format, shown.input_shape) == ("round-trip", "state_dict", [1, 8, 8])
    assert shown.sha256 == model.sha256 == sha256(digits_model_file)
    assert sha256(path) == sha256(digits_model_file)
    assert uploaded_progress[-1] == (size, size) and len(uploaded_progress) >= 2
    assert downloaded_progress[-1] == (size, size)


@pytest.fixture(scope="module")
def model(running_service: RunningService, digits_model_file: Path) -> Model:
    """The digits model uploaded once, for the tests that only use a model already there (each
    upload's check imports torch in a sandboxed child: seconds)."""
    with running_service.client() as client:
        return upload_digits(client, digits_model_file)


def test_deleted_model_is_gone(running_service: RunningService, digits_model_file: Path) -> None:
    with running_service.client() as client:
        model = upload_digits(client, digits_model_file)
        client.models.delete(model.id)
        with pytest.raises(ApiError) as raised:
            client.models.get(model.id)
    assert (raised.value.status, raised.value.code) == (404, "not_found")


def test_bad_upload_raises_api_error_with_code_message_and_field(
    running_service: RunningService, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a model" * 100)
    with running_service.client() as client, pytest.raises(ApiError) as raised:
        client.models.upload(junk, input_shape=[1, 8, 8], num_classes=10)
    error = raised.value
    assert (error.status, error.code, error.field) == (422, "invalid_model", "file")
    assert "not a TorchScript archive, state_dict or safetensors" in error.message


def test_another_owners_model_raises_not_found(
    running_service: RunningService, model: Model
) -> None:
    other_key = running_service.service.create_api_key("intruder", owner="someone-else")
    with running_service.client(other_key) as intruder, pytest.raises(ApiError) as raised:
        intruder.models.get(model.id)
    assert (raised.value.status, raised.value.code) == (404, "not_found")
    assert model.id in raised.value.message


def test_out_of_bounds_option_names_its_field(
    running_service: RunningService, model: Model
) -> None:
    with running_service.client() as client:
        with pytest.raises(ApiError) as raised:
            client.jobs.create(
                kind="harden",
                model_id=model.id,
                threat_model=ThreatModelOptions(epsilon=5.0),
            )
    assert (raised.value.status, raised.value.field) == (422, "threat_model.epsilon")


def test_nothing_listening_raises_api_unavailable() -> None:
    with Client("http://127.0.0.1:9", "rk_x", timeout=5) as client:
        with pytest.raises(ApiUnavailable) as raised:
            client.health()
    assert "http://127.0.0.1:9" in str(raised.value)


def test_health_and_readiness(running_service: RunningService) -> None:
    with running_service.client() as client:
        assert client.health()["status"] == "ok"
        assert client.ready()["status"] == "ready"


def test_dataset_upload_list_get_delete(running_service: RunningService, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, size=(40, 8, 8, 1), dtype=np.uint8),
        y=np.arange(40) % 4,
    )
    with running_service.client() as client:
        dataset = client.datasets.upload(path, name="tiny")
        listed = [each.id for each in client.datasets.list()]
        shown = client.datasets.get(dataset.id)
        client.datasets.delete(dataset.id)
        with pytest.raises(ApiError) as raised:
            client.datasets.get(dataset.id)
    assert dataset.id.startswith("ds_") and {dataset.id, "builtin:digits"} <= set(listed)
    assert (shown.name, shown.kind, shown.input_shape, shown.num_classes) == (
        "tiny",
        "npz",
        [1, 8, 8],
        4,
    )
    assert raised.value.code == "not_found"


@pytest.fixture(scope="module")
def followed_job(
    running_service: RunningService, model: Model
) -> tuple[Job, list[Event], list[Job]]:
    """A short hardening job followed with `wait`: the ended job, its events, its progress."""
    events: list[Event] = []
    updates: list[Job] = []
    with running_service.client() as client:
        job = client.jobs.create(
            kind="harden",
            model_id=model.id,
            dataset="builtin:digits",
            threat_model=ThreatModelOptions(norm="linf", epsilon=0.2, steps=3),
            hyperparameters=Hyperparameters(epochs=2, batch_size=128),
            evaluation=EvaluationOptions(attack_steps=5, max_samples=100),
            seed=1,
        )
        ended = client.jobs.wait(
            job.id, on_event=events.append, on_progress=updates.append, timeout=240
        )
    return ended, events, updates


def test_wait_follows_a_job_to_its_end_with_each_event_once(
    followed_job: tuple[Job, list[Event], list[Job]],
) -> None:
    job, events, updates = followed_job
    assert job.status == "succeeded", job.error
    assert job.metrics.before is not None and job.metrics.after is not None and job.result_model_id
    assert job.metrics.verdict in ("improved", "clean_dropped", "not_improved")
    assert job.metrics.validation == {"source": "train_holdout", "size": 144}
    assert [event.id for event in events] == sorted({event.id for event in events})
    types = [event.type for event in events]
    assert types[0] == "queued" and types[-1] == "succeeded"
    assert [event.epoch.epoch for event in events if event.epoch is not None] == [1, 2]
    assert updates[-1].status == "succeeded" and len(updates) >= 2


def test_paged_and_streamed_events_agree(
    running_service: RunningService, followed_job: tuple[Job, list[Event], list[Job]]
) -> None:
    job, events, _ = followed_job
    with running_service.client() as client:
        paged = list(client.jobs.events(job.id))
        streamed = list(client.jobs.stream_events(job.id))  # ends: the job has ended
        later = list(client.jobs.events(job.id, after=events[2].id))
    assert [each.id for each in paged] == [each.id for each in streamed] == [e.id for e in events]
    assert [each.id for each in later] == [each.id for each in events[3:]]


def test_checkpoints_of_each_epoch_download_as_models(
    running_service: RunningService,
    followed_job: tuple[Job, list[Event], list[Job]],
    tmp_path: Path,
) -> None:
    job, _, _ = followed_job
    with running_service.client() as client:
        checkpoints = client.jobs.checkpoints(job.id)
        path = client.jobs.download_checkpoint(job.id, 2, tmp_path / "epoch-2.pt")
    assert [each.epoch for each in checkpoints] == [1, 2]
    assert checkpoints[1].metrics["val_robust_accuracy"] is not None
    model = load_model(
        path, input_shape=DIGITS_INPUT, num_classes=10, architecture="builtin:digits_cnn"
    )
    assert model.spec.format == "state_dict"


def test_job_is_listed_and_its_report_is_html(
    running_service: RunningService, followed_job: tuple[Job, list[Event], list[Job]]
) -> None:
    job, _, _ = followed_job
    with running_service.client() as client:
        succeeded = [each.id for each in client.jobs.list(status="succeeded")]
        queued = [each.id for each in client.jobs.list(status="queued")]
        html = client.jobs.report_html(job.id)
    assert job.id in succeeded and job.id not in queued
    assert "<html" in html.lower() and job.id in html
