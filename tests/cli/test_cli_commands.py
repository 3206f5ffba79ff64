"""The `robustify` commands that use the service (models, datasets, harden, evaluate, jobs), as
real subprocesses against a running embedded service, on real digits models."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from service_harness import DIGITS_UPLOAD_OPTIONS, RunningService, pgd_accuracy

from core.robust import load_model
from core.robust.datasets.loading import DatasetSplits

JOB_ID = re.compile(r"\bjob_[0-9a-f]+\b")


def output_of(completed: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit code {completed.returncode}\n"
        f"--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"
    )


def queued_job_id(completed: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"Queued \w+ job (job_[0-9a-f]+)", completed.stderr)
    assert match, output_of(completed)
    return match.group(1)


@pytest.fixture(scope="module")
def hardened(
    running_service: RunningService,
    digits_model_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`robustify harden FILE --watch --output OUT`, run once: the process and OUT."""
    output = tmp_path_factory.mktemp("hardened") / "digits-cnn-robust.pt"
    completed = running_service.run(
        "harden", str(digits_model_file), *DIGITS_UPLOAD_OPTIONS,
        "--epsilon", "0.2", "--steps", "7", "--epochs", "4", "--batch-size", "64",
        "--peak-lr", "0.05", "--eval-steps", "10", "--max-samples", "200", "--seed", "0",
        "--max-clean-drop", "0.06", "--watch", "--output", str(output),
    )  # fmt: skip
    # This 4-epoch run gains ~45 points of PGD accuracy for ~4.5 points of clean accuracy on
    # the 200 test images: past the default max_clean_drop of 0.03 (the verdict would be
    # clean_dropped, exit 3), so this test of the success path allows 0.06.
    return completed, output


def test_models_upload_prints_the_id_and_list_shows_it(
    running_service: RunningService, digits_model_file: Path
) -> None:
    uploaded = running_service.run(
        "models", "upload", str(digits_model_file), *DIGITS_UPLOAD_OPTIONS, "--name", "listed"
    )
    assert uploaded.returncode == 0, output_of(uploaded)
    model_id = uploaded.stdout.strip().splitlines()[-1]
    assert model_id.startswith("mdl_")
    assert "uploading digits-cnn.pt" in uploaded.stderr  # the progress bar

    listed = running_service.run("models", "list")
    assert listed.returncode == 0, output_of(listed)
    row = next(line for line in listed.stdout.splitlines() if model_id in line)
    assert "listed" in row and "state_dict" in row and "1x8x8" in row


def test_models_download_saves_the_same_bytes(
    running_service: RunningService, model_id: str, digits_model_file: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "copy.pt"
    completed = running_service.run("models", "download", model_id, "-o", str(destination))
    assert completed.returncode == 0, output_of(completed)
    digest = hashlib.sha256(destination.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(digits_model_file.read_bytes()).hexdigest()


def test_harden_watch_output_saves_a_more_robust_model(
    hardened: tuple[subprocess.CompletedProcess[str], Path],
    digits_model_file: Path,
    digits: DatasetSplits,
) -> None:
    completed, output = hardened
    assert completed.returncode == 0, output_of(completed)
    # The live display (stderr): a line per epoch; the results (stdout): the table, the file.
    assert "epoch  4  loss" in completed.stderr
    assert "PGD-10 (eps 0.2)" in completed.stdout
    assert f"Saved the hardened model to {output}" in completed.stdout
    assert "Verdict: improved" in completed.stdout  # and so the exit code 0
    model = load_model(
        output, input_shape=(1, 8, 8), num_classes=10, architecture="builtin:digits_cnn"
    )
    assert model.spec.format == "state_dict"
    before, after = pgd_accuracy(digits_model_file, digits), pgd_accuracy(output, digits)
    assert after > before + 0.1, (before, after)


def test_jobs_list_and_show_the_finished_job(
    running_service: RunningService, hardened: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    job_id = queued_job_id(hardened[0])

    listed = running_service.run("jobs", "list")
    succeeded = running_service.run("jobs", "list", "--status", "succeeded")
    failed = running_service.run("jobs", "list", "--status", "failed")
    shown = running_service.run("jobs", "show", job_id)

    assert listed.returncode == succeeded.returncode == failed.returncode == 0
    assert job_id in listed.stdout and job_id in succeeded.stdout and job_id not in failed.stdout
    assert shown.returncode == 0, output_of(shown)
    assert re.search(r"status\s+succeeded", shown.stdout)
    assert re.search(r"hardened model\s+mdl_", shown.stdout)
    assert "PGD-10 (eps 0.2)" in shown.stdout
    # Left to the data, the digits got none (a mirrored digit is no digit).
    assert re.search(r"augmentation\s+none \(auto, by the data\)", shown.stdout), shown.stdout


def test_jobs_cancel_stops_a_running_job(running_service: RunningService, model_id: str) -> None:
    created = running_service.run(
        "harden", model_id, "--epochs", "200", "--epsilon", "0.2", "--max-samples", "50"
    )
    assert created.returncode == 0, output_of(created)
    job_id = created.stdout.strip().splitlines()[-1]
    assert JOB_ID.fullmatch(job_id)

    cancelled = running_service.run("jobs", "cancel", job_id)
    watched = running_service.run("jobs", "watch", job_id)

    assert cancelled.returncode == 0, output_of(cancelled)
    assert watched.returncode == 1, output_of(watched)
    assert f"error: job {job_id} was cancelled" in watched.stderr
    with running_service.client() as client:
        assert client.jobs.get(job_id).status == "cancelled"


def test_harden_no_weight_interpolation_reaches_the_jobs_hyperparameters(
    running_service: RunningService, model_id: str
) -> None:
    created = running_service.run(
        "harden", model_id, "--epochs", "200", "--epsilon", "0.2", "--max-samples", "50",
        "--no-weight-interpolation",
    )  # fmt: skip
    assert created.returncode == 0, output_of(created)
    job_id = created.stdout.strip().splitlines()[-1]
    running_service.run("jobs", "cancel", job_id)  # only its stored config is of interest

    with running_service.client() as client:
        job = client.jobs.get(job_id)
    assert job.hyperparameters["weight_interpolation"] is False


def test_harden_augmentation_reaches_the_jobs_hyperparameters(
    running_service: RunningService, model_id: str
) -> None:
    created = running_service.run(
        "harden", model_id, "--epochs", "200", "--epsilon", "0.2", "--max-samples", "50",
        "--augmentation", "imagenet",
    )  # fmt: skip
    assert created.returncode == 0, output_of(created)
    job_id = created.stdout.strip().splitlines()[-1]
    running_service.run("jobs", "cancel", job_id)  # only its stored config is of interest
    refused = running_service.run("harden", model_id, "--augmentation", "cutmix")

    with running_service.client() as client:
        job = client.jobs.get(job_id)
    assert job.hyperparameters["augmentation"] == "imagenet"
    assert refused.returncode == 2 and "cutmix" in refused.stderr, output_of(refused)


def test_harden_precision_compile_and_world_size_reach_the_job(
    running_service: RunningService, model_id: str
) -> None:
    created = running_service.run(
        "harden", model_id, "--epochs", "200", "--epsilon", "0.2", "--max-samples", "50",
        "--precision", "bf16", "--compile", "--world-size", "2",
    )  # fmt: skip
    assert created.returncode == 0, output_of(created)
    job_id = created.stdout.strip().splitlines()[-1]
    running_service.run("jobs", "cancel", job_id)  # only its stored config is of interest
    refused = running_service.run("harden", model_id, "--precision", "fp8")

    with running_service.client() as client:
        job = client.jobs.get(job_id)
    assert job.hyperparameters["precision"] == "bf16"
    assert job.hyperparameters["compile"] is True
    assert job.resources == {"world_size": 2}
    assert refused.returncode == 2 and "fp8" in refused.stderr, output_of(refused)


def test_a_run_that_lost_clean_accuracy_shows_the_mix_handed_back(
    running_service: RunningService, model_id: str
) -> None:
    # Every epoch of this run ends 5+ points of validation clean accuracy below the upload's.
    completed = running_service.run(
        "harden", model_id,
        "--epsilon", "0.2", "--steps", "7", "--epochs", "3", "--batch-size", "64",
        "--peak-lr", "0.1", "--max-clean-drop", "0.01", "--eval-steps", "5",
        "--max-samples", "100", "--watch",
    )  # fmt: skip

    assert completed.returncode in (0, 3), output_of(completed)
    assert "interpolation: no epoch kept validation clean accuracy" in completed.stderr
    job_id = queued_job_id(completed)
    with running_service.client() as client:
        job = client.jobs.get(job_id)
    assert (
        job.metrics.interpolation is not None and job.metrics.interpolation["fraction"] is not None
    )
    shown = running_service.run("jobs", "show", job_id)
    assert shown.returncode == 0, output_of(shown)
    fraction = f"{job.metrics.interpolation['fraction']:.3g}"
    assert re.search(
        rf"interpolation\s+{fraction} of the way from the uploaded weights", shown.stdout
    )


def test_an_absurd_peak_lr_does_not_end_improved_and_exits_3(
    running_service: RunningService, model_id: str
) -> None:
    completed = running_service.run(
        "harden", model_id,
        "--epsilon", "0.2", "--steps", "3", "--epochs", "2", "--peak-lr", "10",
        "--eval-steps", "5", "--max-samples", "100", "--watch",
    )  # fmt: skip

    assert completed.returncode == 3, output_of(completed)
    job_id = queued_job_id(completed)
    with running_service.client() as client:
        job = client.jobs.get(job_id)
    assert job.status == "succeeded" and job.metrics.verdict in ("clean_dropped", "not_improved")
    assert f"verdict: {job.metrics.verdict}" in completed.stderr
    watched = running_service.run("jobs", "watch", job_id)  # the ended job: shown, exit 3 again
    assert watched.returncode == 3, output_of(watched)


def test_a_failed_job_exits_1_after_printing_its_error(
    running_service: RunningService, digits_model_file: Path, tmp_path: Path
) -> None:
    weights = torch.load(digits_model_file, weights_only=True)
    diverging = tmp_path / "nan.pt"
    torch.save(
        {name: torch.full_like(value, float("nan")) for name, value in weights.items()}, diverging
    )

    completed = running_service.run(
        "harden", str(diverging), *DIGITS_UPLOAD_OPTIONS,
        "--epochs", "2", "--eval-steps", "2", "--max-samples", "50", "--watch",
    )  # fmt: skip

    assert completed.returncode == 1, output_of(completed)
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job job_") and "failed:" in last, output_of(completed)
    assert last.endswith("(training_diverged)")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("models", "show", "mdl_0123456789"), "error: no model mdl_0123456789 (not_found)"),
        (
            ("harden", "mdl_0123456789", "--epsilon", "5"),
            "error: threat_model.epsilon: a linf epsilon must be at most 1, got 5.0 "
            "(invalid_request, field threat_model.epsilon)",
        ),
        (("jobs", "cancel", "job_0123456789"), "error: no job job_0123456789 (not_found)"),
    ],
    ids=["not-found", "out-of-bounds", "cancel-unknown"],
)
def test_an_api_error_is_one_line_on_stderr_and_exit_code_1(
    running_service: RunningService, args: tuple[str, ...], expected: str
) -> None:
    completed = running_service.run(*args)
    assert completed.returncode == 1, output_of(completed)
    assert completed.stderr.splitlines() == [expected]
    assert completed.stdout == ""


def test_a_bad_key_and_no_service_are_one_line_errors_too(
    running_service: RunningService,
) -> None:
    bad_key = running_service.run("jobs", "list", api_key="rk_not-a-key")
    assert (bad_key.returncode, bad_key.stderr.splitlines()) == (
        1,
        ["error: invalid or revoked API key (unauthorized)"],
    )
    nowhere = running_service.run("--url", "http://127.0.0.1:9", "models", "list")
    assert nowhere.returncode == 1
    assert len(nowhere.stderr.splitlines()) == 1
    assert nowhere.stderr.startswith("error: cannot reach robustify at http://127.0.0.1:9")


def test_evaluate_watch_prints_the_models_accuracy(
    running_service: RunningService, digits_model_file: Path
) -> None:
    completed = running_service.run(
        "evaluate", str(digits_model_file), *DIGITS_UPLOAD_OPTIONS,
        "--epsilon", "0.1", "--eval-steps", "5", "--max-samples", "100", "--watch",
    )  # fmt: skip
    assert completed.returncode == 0, output_of(completed)
    assert re.search(r"clean\s+│\s+\d+\.\d%", completed.stdout), completed.stdout
    assert "PGD-5 (eps 0.1)" in completed.stdout


def test_datasets_upload_and_list(running_service: RunningService, tmp_path: Path) -> None:
    path = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, size=(30, 8, 8, 1), dtype=np.uint8), y=np.arange(30) % 3)

    uploaded = running_service.run("datasets", "upload", str(path), "--name", "tiny")
    listed = running_service.run("datasets", "list")

    assert uploaded.returncode == 0, output_of(uploaded)
    dataset_id = uploaded.stdout.strip().splitlines()[-1]
    assert dataset_id.startswith("ds_")
    assert dataset_id in listed.stdout and "builtin:digits" in listed.stdout


def test_jobs_report_saves_the_html(
    running_service: RunningService,
    hardened: tuple[subprocess.CompletedProcess[str], Path],
    tmp_path: Path,
) -> None:
    job_id = queued_job_id(hardened[0])
    destination = tmp_path / "report.html"

    completed = running_service.run("jobs", "report", job_id, "-o", str(destination))

    assert completed.returncode == 0, output_of(completed)
    html = destination.read_text()
    assert "<html" in html.lower() and job_id in html


def test_a_timm_model_round_trips_through_upload_harden_and_download(
    running_service: RunningService, tmp_path: Path
) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    # A LayerNorm ConvNeXt as its user built it (timm's test-sized one: seconds on a CPU).
    net = timm.create_model("test_convnext", pretrained=False, num_classes=10).eval()
    uploaded, output = tmp_path / "convnext.pt", tmp_path / "convnext-robust.pt"
    torch.save(net.state_dict(), uploaded)

    completed = running_service.run(
        "harden", str(uploaded), "--architecture", "timm:test_convnext",
        "--input-shape", "3,32,32", "--num-classes", "10", "--dataset", "builtin:digits32",
        "--epsilon", str(8 / 255), "--steps", "2", "--epochs", "1",
        "--peak-lr", "0.01", "--no-guards", "--eval-steps", "2", "--max-samples", "50",
        "--output", str(output),
    )  # fmt: skip

    # An untrained net gains nothing (exit 3: not improved; no guards, which would hand back
    # the upload itself were its epoch to fall below chance); the file must still come back.
    assert completed.returncode in (0, 3), output_of(completed)
    assert f"Saved the hardened model to {output}" in completed.stdout, output_of(completed)
    again = timm.create_model("test_convnext", pretrained=False, num_classes=10).eval()
    again.load_state_dict(torch.load(output, weights_only=True), strict=True)
    changed = [
        name
        for name, value in again.state_dict().items()
        if value.is_floating_point() and not torch.equal(value, net.state_dict()[name])
    ]
    assert changed  # fine-tuned, not the upload handed back
