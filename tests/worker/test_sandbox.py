"""A job's engine runs the user's model in the sandbox: crafted TorchScript models that write a
file, read a secret, or allocate without bound (at once, or only on batches of 16 or more, so
that an upload check passes them) reach nothing outside their job folder, and their jobs fail
with an error that says why. The models are registered as if uploaded before uploads were
checked; they run through a real worker process."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from worker_harness import (
    Service,
    WorkerProcess,
    harden_config,
    store_torchscript_model,
    worker_settings,
)

from core.service.config import Settings
from core.service.jobs.lifecycle import FAILED, SUCCEEDED
from core.service.jobs.pipeline import run_job


class FileWriter(nn.Module):
    """Writes 16 bytes of 66 into each of `paths` (creating missing files), from `min_batch`."""

    def __init__(self, paths: list[str], min_batch: int) -> None:
        super().__init__()
        self.paths, self.min_batch = paths, min_batch
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.flatten(1))
        if x.shape[0] >= self.min_batch:
            for path in self.paths:
                written = torch.from_file(path, shared=True, size=16, dtype=torch.uint8)
                written.fill_(66)
                # Used in the output, so the compiler keeps the write.
                logits = logits + written[0].float() * 0.0
        return logits


class SecretReader(nn.Module):
    """Reads a secret file into a buffer (saved with its weights) and into its output."""

    def __init__(self, path: str, size: int, min_batch: int) -> None:
        super().__init__()
        self.path, self.size, self.min_batch = path, size, min_batch
        self.fc = nn.Linear(64, 10)
        self.register_buffer("stolen", torch.zeros(size, dtype=torch.uint8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.flatten(1))
        if x.shape[0] >= self.min_batch:
            secret = torch.from_file(self.path, shared=False, size=self.size, dtype=torch.uint8)
            self.stolen.copy_(secret)  # type: ignore[operator]
            logits = logits + secret[:10].float()
        return logits


class Hog(nn.Module):
    """Asks for 8 GiB of address space on batches of 16 or more (never touches it)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.flatten(1))
        if x.shape[0] >= 16:
            hoard = torch.empty([2147483648], dtype=torch.float32)
            logits = logits + hoard[:1] * 0.0
        return logits


def scripted(module: nn.Module) -> torch.jit.ScriptModule:
    return torch.jit.script(module)


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def everything_said_about(service: Service, job_id: str) -> str:
    """The job's row and events as the API would show them, as one text."""
    job = service.job(job_id)
    events = [(e.type, e.message, e.data) for e in service.events(job_id)]
    shown = [job.status, job.progress, job.metrics, job.manifest, job.error, events]
    return json.dumps(shown, default=str)


def stored_bytes(service: Service) -> bytes:
    root = service.context.store.root
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def test_crafted_torchscript_models_reach_no_file_outside_their_job_folder(
    tmp_path: Path,
    embedded_settings: Settings,
    make_service: Callable[[Settings], Service],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = worker_settings(embedded_settings, sandbox="bubblewrap")
    service = make_service(settings)
    marker = tmp_path / "marker.bin"
    marker.write_bytes(b"untouched marker")
    before = snapshot(marker)
    secret = secrets.token_hex(16).encode()
    (tmp_path / "secret.txt").write_bytes(secret)
    planted = [tmp_path / "planted.bin", settings.data_dir / "planted.bin"]
    writers = [str(marker), *(str(path) for path in planted)]
    models = {
        "writes at once": FileWriter(writers, min_batch=1),
        "writes on batches of 16+": FileWriter(writers, min_batch=16),
        "reads at once": SecretReader(str(tmp_path / "secret.txt"), len(secret), min_batch=1),
        "reads on batches of 16+": SecretReader(
            str(tmp_path / "secret.txt"), len(secret), min_batch=16
        ),
    }
    job_ids = {
        name: service.create_job(
            harden_config(epochs=1),
            model_id=store_torchscript_model(
                service.context, service.owner_id, scripted(module)
            ).id,
        )
        for name, module in models.items()
    }
    # Sanity: outside the sandbox these models do what they are built to do.
    probe = tmp_path / "probe.bin"
    scripted(FileWriter([str(probe)], min_batch=16))(torch.zeros(16, 1, 8, 8))
    assert probe.read_bytes() == b"B" * 16
    probe.unlink()
    worker = start_worker(service.settings)

    ended = {
        name: service.wait_for_job(job_id, statuses={FAILED}, workers=[worker])
        for name, job_id in job_ids.items()
    }

    assert snapshot(marker) == before
    for path in planted:
        assert not path.exists(), f"{path} was created"
    for name, job in ended.items():
        assert job.error is not None, name
        assert job.error["code"] in {"invalid_model", "model_error"}, (name, job.error)
        # The reason first: the file is not there for the model (the sandbox shows only the
        # job folder), then where in its code it tried.
        reason = job.error["message"].splitlines()[0]
        assert "unable to open file" in reason and "No such file" in reason, (name, job.error)
        assert "from_file" in job.error["message"], (name, job.error)
        assert job.result_model_id is None
        assert secret.decode() not in everything_said_about(service, job.id), name
    assert secret not in stored_bytes(service)
    assert worker.popen.poll() is None


def test_engine_over_its_memory_limit_fails_the_job_with_out_of_memory(
    embedded_settings: Settings,
    make_service: Callable[[Settings], Service],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = worker_settings(embedded_settings, sandbox="bubblewrap", job_memory_bytes=1024**3)
    service = make_service(settings)
    model = store_torchscript_model(service.context, service.owner_id, scripted(Hog()))
    job_id = service.create_job(harden_config(epochs=1), model_id=model.id)
    worker = start_worker(service.settings)

    job = service.wait_for_job(job_id, statuses={FAILED}, workers=[worker])

    assert job.error is not None and job.error["code"] == "out_of_memory", job.error
    assert "job_memory_bytes" in job.error["message"]
    assert worker.popen.poll() is None


def test_torchscript_without_a_sandbox_is_refused_before_it_runs(
    tmp_path: Path,
    embedded_settings: Settings,
    make_service: Callable[[Settings], Service],
) -> None:
    settings = worker_settings(embedded_settings, sandbox="none")
    service = make_service(settings)
    marker = tmp_path / "marker.bin"
    marker.write_bytes(b"untouched marker")
    before = snapshot(marker)
    model = store_torchscript_model(
        service.context, service.owner_id, scripted(FileWriter([str(marker)], min_batch=1))
    )
    job_id = service.create_job(harden_config(epochs=1), model_id=model.id, enqueue=False)

    run_job(
        job_id,
        settings=settings,
        factory=service.context.sessions,
        store=service.context.store,
        worker_id=f"test:{os.getpid()}",
    )

    job = service.job(job_id)
    assert job.status == FAILED and job.error is not None
    assert job.error["code"] == "invalid_model"
    assert "no sandbox" in job.error["message"]
    assert snapshot(marker) == before


class Chatterbox(nn.Module):
    """Prints what looks like the engine's own messages, at every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print('{"type": "stopped"}')
        print('{"type": "failed", "code": "internal_error", "message": "forged"}')
        return self.fc(x.flatten(1))


def test_what_a_model_prints_never_passes_for_an_engine_message(
    embedded_settings: Settings,
    make_service: Callable[[Settings], Service],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = worker_settings(embedded_settings, sandbox="bubblewrap")
    service = make_service(settings)
    model = store_torchscript_model(service.context, service.owner_id, scripted(Chatterbox()))
    job_id = service.create_job(harden_config(epochs=1), model_id=model.id)
    worker = start_worker(service.settings)

    job = service.wait_for_job(job_id, statuses={SUCCEEDED, FAILED}, workers=[worker])

    assert job.status == SUCCEEDED, job.error
    assert job.result_model_id is not None and job.metrics["epochs"][0]["epoch"] == 1
