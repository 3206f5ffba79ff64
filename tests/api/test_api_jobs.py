"""Jobs: creation with the engine's defaults and the service's bounds, idempotency, listing,
cancel, and a job as a worker leaves it (progress, metrics, checkpoints)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient
from http_checks import assert_error, job_body

from core.robust.finetune import FinetuneConfig
from core.robust.threat import ThreatModel
from core.service.context import ServiceContext
from core.service.jobs import jobconfig
from core.service.jobs.lifecycle import claim_job
from core.service.tables import Job


def test_job_is_created_with_defaults_filled_and_enqueued(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    enqueued: list[str],
):
    body = {"kind": "harden", "model_id": stored_model["id"], "dataset": "builtin:digits"}
    response = client.post("/v1/jobs", headers=headers, json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["attempts"] == 0
    # The engine's defaults, the one knob of the data split that is the job's own, and the
    # augmentation left to the data (null: "auto", resolved where the run starts).
    engine_defaults = {
        **dataclasses.asdict(FinetuneConfig()),
        "validation_fraction": jobconfig.VALIDATION_FRACTION,
        "augmentation": None,
    }
    for name, value in job["hyperparameters"].items():
        assert value == engine_defaults[name], name
    assert job["threat_model"]["epsilon"] == ThreatModel().epsilon
    assert job["evaluation"]["max_samples"] == jobconfig.EvaluationSettings().max_samples
    assert job["metrics"] == {
        "before": None, "after": None, "epochs": [], "best_epoch": None, "verdict": None,
        "validation": None, "peak_lr": None, "optimizer": None, "augmentation": None,
        "precision": None, "lr_probe": None, "guards": [], "interpolation": None,
    }  # fmt: skip
    with context.sessions() as session:
        stored = session.get(Job, job["id"])
        assert stored is not None
        config = stored.config
    assert set(config) == {"threat_model", "hyperparameters", "evaluation", "seed", "resources"}
    assert config["resources"] == {"world_size": 1}
    # What the worker will read back, through the same functions it uses.
    assert jobconfig.finetune_config(config) == FinetuneConfig()
    assert jobconfig.threat_model(config) == ThreatModel()
    assert enqueued == [job["id"]]


@pytest.mark.parametrize(
    ("section", "values", "field"),
    [
        ("hyperparameters", {"epochs": 0}, "hyperparameters.epochs"),
        ("hyperparameters", {"epochs": 201}, "hyperparameters.epochs"),
        ("hyperparameters", {"batch_size": 5000}, "hyperparameters.batch_size"),
        ("hyperparameters", {"peak_lr": 0}, "hyperparameters.peak_lr"),
        ("hyperparameters", {"weight_decay": 0.5}, "hyperparameters.weight_decay"),
        ("hyperparameters", {"warmup_fraction": 1.0}, "hyperparameters.warmup_fraction"),
        ("hyperparameters", {"decay_gamma": 1.0}, "hyperparameters.decay_gamma"),
        ("hyperparameters", {"schedule": "bogus"}, "hyperparameters.schedule"),
        ("hyperparameters", {"optimizer": "lamb"}, "hyperparameters.optimizer"),
        ("hyperparameters", {"augmentation": "cutmix"}, "hyperparameters.augmentation"),
        ("hyperparameters", {"augmentation": "auto"}, "hyperparameters.augmentation"),
        ("hyperparameters", {"precision": "fp8"}, "hyperparameters.precision"),
        ("hyperparameters", {"compile": "sometimes"}, "hyperparameters.compile"),
        ("hyperparameters", {"epoch": 3}, "hyperparameters.epoch"),
        ("hyperparameters", {"validation_fraction": 0}, "hyperparameters.validation_fraction"),
        ("hyperparameters", {"max_clean_drop": -0.1}, "hyperparameters.max_clean_drop"),
        ("hyperparameters", {"max_clean_drop": 1.5}, "hyperparameters.max_clean_drop"),
        ("hyperparameters", {"validation_fraction": 0.6}, "hyperparameters.validation_fraction"),
        (
            "hyperparameters",
            {"weight_interpolation": "sometimes"},
            "hyperparameters.weight_interpolation",
        ),
        ("threat_model", {"norm": "linf", "epsilon": 1.5}, "threat_model.epsilon"),
        ("threat_model", {"norm": "l2", "epsilon": 101}, "threat_model.epsilon"),
        ("threat_model", {"epsilon": 0}, "threat_model.epsilon"),
        ("threat_model", {"steps": 1001}, "threat_model.steps"),
        ("evaluation", {"restarts": 21}, "evaluation.restarts"),
        ("evaluation", {"max_samples": 0}, "evaluation.max_samples"),
        ("evaluation", {"attack": "pgd"}, "evaluation.attack"),
        ("evaluation", {"attack": "fast", "autoattack": True}, "evaluation.autoattack"),
        ("evaluation", {"epsilons": [0.1] * 21}, "evaluation.epsilons"),
        ("seed", -1, "seed"),
        ("kind", "train", "kind"),
    ],
)
def test_out_of_bounds_values_are_422_naming_the_field(
    client: TestClient, headers: dict[str, str], section: str, values: Any, field: str
):
    # The body is checked before the model is looked up: no model needed to reach the bounds.
    body = job_body("mdl_0")
    if isinstance(values, dict):
        body[section] = {**body.get(section, {}), **values}
    else:
        body[section] = values
    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)
    assert error["field"] == field, error
    assert error["message"].startswith(field)


def stored_config(context: ServiceContext, job_id: str) -> dict[str, Any]:
    with context.sessions() as session:
        stored = session.get(Job, job_id)
        assert stored is not None
        return dict(stored.config)


@pytest.mark.parametrize("attack", jobconfig.EVALUATION_ATTACKS)
def test_each_evaluation_preset_is_accepted_and_stored(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    attack: str,
):
    body = job_body(stored_model["id"], evaluation={"attack": attack})
    response = client.post("/v1/jobs", headers=headers, json=body)

    assert response.status_code == 202, response.text
    assert response.json()["evaluation"]["attack"] == attack
    config = stored_config(context, response.json()["id"])
    assert jobconfig.evaluation_settings(config).attack == attack
    assert "autoattack" not in config["evaluation"]


@pytest.mark.parametrize("augmentation", ["none", "standard", "imagenet"])
def test_each_augmentation_is_accepted_and_stored(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    augmentation: str,
):
    body = job_body(stored_model["id"], hyperparameters={"augmentation": augmentation})
    response = client.post("/v1/jobs", headers=headers, json=body)

    assert response.status_code == 202, response.text
    assert response.json()["hyperparameters"]["augmentation"] == augmentation
    config = stored_config(context, response.json()["id"])
    # Asked for, it is what the run uses whatever the data.
    resolved = jobconfig.finetune_config(config, dataset="ds_x", input_shape=(3, 224, 224))
    assert resolved.augmentation == augmentation


@pytest.mark.parametrize(("precision", "compile"), [("bf16", True), ("fp16", False)])
def test_precision_and_compile_are_accepted_and_reach_the_engines_config(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
    precision: str,
    compile: bool,
):
    hyperparameters = {"precision": precision, "compile": compile}
    body = job_body(stored_model["id"], hyperparameters=hyperparameters)
    response = client.post("/v1/jobs", headers=headers, json=body)

    assert response.status_code == 202, response.text
    assert response.json()["hyperparameters"]["precision"] == precision
    resolved = jobconfig.finetune_config(stored_config(context, response.json()["id"]))
    assert (resolved.precision, resolved.compile) == (precision, compile)


def test_augmentation_left_out_is_resolved_by_the_data_where_the_run_starts(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    response = client.post("/v1/jobs", headers=headers, json=job_body(stored_model["id"]))

    assert response.status_code == 202, response.text
    config = stored_config(context, response.json()["id"])
    assert config["hyperparameters"]["augmentation"] is None
    choices = {
        (dataset, shape): jobconfig.finetune_config(
            config, dataset=dataset, input_shape=shape
        ).augmentation
        for dataset, shape in [
            ("builtin:digits", (1, 8, 8)),
            ("builtin:digits32", (3, 32, 32)),
            ("ds_a", (3, 32, 32)),
            ("ds_b", (3, 224, 224)),
        ]
    }
    assert list(choices.values()) == ["none", "none", "standard", "imagenet"]


def test_the_default_evaluation_preset_is_the_standard_ensemble(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    response = client.post("/v1/jobs", headers=headers, json=job_body(stored_model["id"]))

    assert response.status_code == 202, response.text
    assert response.json()["evaluation"]["attack"] == "standard"


def test_the_deprecated_autoattack_flag_is_stored_as_the_autoattack_preset(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    for evaluation in ({"autoattack": True}, {"attack": "autoattack", "autoattack": True}):
        body = job_body(stored_model["id"], evaluation=evaluation)
        response = client.post("/v1/jobs", headers=headers, json=body)

        assert response.status_code == 202, response.text
        config = stored_config(context, response.json()["id"])
        assert config["evaluation"]["attack"] == "autoattack"
        assert "autoattack" not in config["evaluation"]


def test_the_autoattack_flag_beside_another_preset_is_422_naming_the_conflict(
    client: TestClient, headers: dict[str, str]
):
    body = job_body("mdl_0", evaluation={"attack": "standard", "autoattack": True})

    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)

    assert error["field"] == "evaluation.autoattack"
    assert "conflicts with attack 'standard'" in error["message"]


def test_evaluation_epsilons_are_bounded_by_the_threat_norm(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    body = job_body(stored_model["id"], evaluation={"epsilons": [0.1, 2.0]})
    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)
    assert error["field"] == "evaluation.epsilons[1]"
    body["threat_model"] = {"norm": "l2", "epsilon": 1.0}
    assert client.post("/v1/jobs", headers=headers, json=body).status_code == 202


def test_bound_is_named_in_the_message(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    body = job_body(stored_model["id"], hyperparameters={"epochs": 500})
    error = assert_error(client.post("/v1/jobs", headers=headers, json=body), 422)
    assert "200" in error["message"] and "500" in error["message"]


def test_missing_model_and_misfit_dataset_are_422_naming_them(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    missing = client.post("/v1/jobs", headers=headers, json=job_body("mdl_0000"))
    assert assert_error(missing, 422)["field"] == "model_id"
    misfit = job_body(stored_model["id"], dataset="builtin:cifar10")
    error = assert_error(client.post("/v1/jobs", headers=headers, json=misfit), 422)
    assert error["field"] == "dataset" and "[3, 32, 32]" in error["message"]
    unknown = job_body(stored_model["id"], dataset="ds_nope")
    assert assert_error(client.post("/v1/jobs", headers=headers, json=unknown), 422)["field"] == (
        "dataset"
    )


def test_idempotency_key_replays_the_same_job_once(
    client: TestClient,
    headers: dict[str, str],
    stored_model: dict[str, Any],
    enqueued: list[str],
):
    keyed = {**headers, "Idempotency-Key": "retry-me"}
    body = job_body(stored_model["id"])
    first = client.post("/v1/jobs", headers=keyed, json=body)
    again = client.post("/v1/jobs", headers=keyed, json=body)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert enqueued == [first.json()["id"]]  # no second message
    changed = job_body(stored_model["id"], seed=1)
    assert_error(client.post("/v1/jobs", headers=keyed, json=changed), 409, "conflict")
    unkeyed = client.post("/v1/jobs", headers=headers, json=body)
    assert unkeyed.json()["id"] != first.json()["id"]
    assert enqueued == [first.json()["id"], unkeyed.json()["id"]]


def test_jobs_list_in_pages_and_by_status(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    ids = [
        client.post("/v1/jobs", headers=headers, json=job_body(stored_model["id"])).json()["id"]
        for _ in range(3)
    ]
    first = client.get("/v1/jobs", headers=headers, params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = client.get(
        "/v1/jobs", headers=headers, params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert rest["next_cursor"] is None
    assert [job["id"] for job in first["items"] + rest["items"]] == ids[::-1]

    client.post(f"/v1/jobs/{ids[1]}/cancel", headers=headers)
    cancelled = client.get("/v1/jobs", headers=headers, params={"status": "cancelled"}).json()
    assert [job["id"] for job in cancelled["items"]] == [ids[1]]
    bad = client.get("/v1/jobs", headers=headers, params={"status": "paused"})
    assert assert_error(bad, 422)["field"] == "status"


def test_cancel_of_a_queued_job_is_immediate_and_once(
    client: TestClient, headers: dict[str, str], stored_model: dict[str, Any]
):
    job = client.post("/v1/jobs", headers=headers, json=job_body(stored_model["id"])).json()
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert response.status_code == 202
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert cancelled["error"]["code"] == "cancelled"
    assert_error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers), 409, "conflict")


def test_cancel_of_a_running_job_is_requested(
    client: TestClient,
    headers: dict[str, str],
    context: ServiceContext,
    stored_model: dict[str, Any],
):
    job = client.post("/v1/jobs", headers=headers, json=job_body(stored_model["id"])).json()
    claimed = claim_job(
        context.sessions, job["id"], worker_id="test-worker", lease_seconds=60, max_attempts=3
    )
    assert claimed is not None
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    assert response.json()["attempts"] == 1
