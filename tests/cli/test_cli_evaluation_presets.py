"""The evaluation preset from the command line: `evaluate --attack`, `harden --eval-attack` and
the old `--autoattack` reach the job as its `evaluation.attack`, against a running embedded
service; `--autoattack` beside another preset is refused before anything is sent."""

from __future__ import annotations

import subprocess

import pytest
from service_harness import RunningService

from robustify import Job


def created_job(
    running_service: RunningService, completed: subprocess.CompletedProcess[str]
) -> Job:
    """The job a command without --watch queued (its id is stdout's last line), cancelled at
    once: only its stored settings matter here."""
    assert completed.returncode == 0, completed.stdout + completed.stderr
    job_id = completed.stdout.strip().splitlines()[-1]
    with running_service.client() as client:
        job = client.jobs.get(job_id)
        if not job.ended:
            client.jobs.cancel(job_id)
    return job


@pytest.mark.parametrize("attack", ["fast", "standard", "autoattack"])
def test_evaluate_attack_is_the_jobs_evaluation_preset(
    running_service: RunningService, model_id: str, attack: str
) -> None:
    completed = running_service.run(
        "evaluate", model_id, "--attack", attack, "--max-samples", "20", "--eval-steps", "2"
    )

    assert created_job(running_service, completed).evaluation["attack"] == attack


def test_without_an_attack_option_the_job_gets_the_services_default(
    running_service: RunningService, model_id: str
) -> None:
    completed = running_service.run("evaluate", model_id, "--max-samples", "20")

    assert created_job(running_service, completed).evaluation["attack"] == "standard"


def test_harden_eval_attack_and_the_old_autoattack_flag_reach_the_job(
    running_service: RunningService, model_id: str
) -> None:
    fast = running_service.run("harden", model_id, "--eval-attack", "fast", "--epochs", "1")
    old = running_service.run("evaluate", model_id, "--autoattack", "--max-samples", "20")

    assert created_job(running_service, fast).evaluation["attack"] == "fast"
    assert created_job(running_service, old).evaluation["attack"] == "autoattack"


def job_count(running_service: RunningService) -> int:
    with running_service.client() as client:
        return len(list(client.jobs.list()))


def test_autoattack_beside_another_preset_exits_2_naming_both_and_sends_nothing(
    running_service: RunningService, model_id: str
) -> None:
    jobs_before = job_count(running_service)

    completed = running_service.run("evaluate", model_id, "--attack", "fast", "--autoattack")

    assert completed.returncode == 2, completed.stdout + completed.stderr
    message = " ".join(completed.stderr.replace("│", " ").split())
    assert "--autoattack means --attack autoattack" in message
    assert "conflicts with --attack fast" in message
    assert job_count(running_service) == jobs_before


def test_an_unknown_preset_is_refused_by_the_command_line(
    running_service: RunningService, model_id: str
) -> None:
    completed = running_service.run("evaluate", model_id, "--attack", "pgd")

    assert completed.returncode == 2
    assert "'pgd' is not one of 'fast', 'standard', 'autoattack'" in " ".join(
        completed.stderr.replace("│", " ").split()
    )
