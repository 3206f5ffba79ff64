"""Helpers for tests against real worker processes: start, kill and stop `celery -A worker.main
worker`, put the digits model in a configuration's store, make jobs through core, wait on them."""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from model_rows import DIGITS_INPUT, register_digits_model
from sqlalchemy import select
from torch import nn

from api.queue import JobQueue
from core.robust.models.modelio import RobustModel, load_model, model_from_module, save_model
from core.service import auth
from core.service.broker import JOBS_QUEUE
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.jobs import lifecycle
from core.service.tables import Checkpoint, Job, JobEvent, Model
from worker.celery_app import consumed_queues

REPO_ROOT = Path(__file__).resolve().parents[2]
# One torch thread in the workers: on two shared cores more threads only contend (and the
# resumed-run test needs the same count in every process that trains).
WORKER_TORCH_THREADS = 1


def worker_settings(settings: Settings, **overrides: Any) -> Settings:
    """`settings` with what every worker in these tests runs with, plus `overrides`."""
    values: dict[str, Any] = {
        "torch_threads": WORKER_TORCH_THREADS,
        "log_format": "text",
        "worker_device": "cpu",
    }
    values.update(overrides)
    return settings.model_copy(update=values)


# The Redis database these tests' queue lives in. tests/conftest.py flushes db 9 for every
# production test; a database of our own keeps real workers from eating (or starving on) the
# messages of other test runs that share this Redis (a developer's machine, not CI).
WORKER_TESTS_REDIS_DB = 11


def with_private_queue(settings: Settings) -> Settings:
    """`settings` with its Redis broker moved to WORKER_TESTS_REDIS_DB, emptied."""
    assert settings.broker_url is not None and settings.broker_url.startswith("redis://")
    url = f"{settings.broker_url.rsplit('/', 1)[0]}/{WORKER_TESTS_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    return settings.model_copy(update={"broker_url": url})


def queued_job_ids(broker: redis.Redis) -> list[str]:
    """The job ids of the messages waiting in the jobs queue (kombu's Redis list)."""
    ids = []
    for raw in broker.lrange(JOBS_QUEUE, 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.append(body[0][0])
    return ids


def settings_environment(settings: Settings) -> dict[str, str]:
    """This environment without ROBUSTIFY_*, plus `settings` as ROBUSTIFY_* variables."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ROBUSTIFY_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"ROBUSTIFY_{name.upper()}"] = str(
            value.resolve() if isinstance(value, Path) else value
        )
    return env


def process_group(pgid: int) -> list[int]:
    """The live (non-zombie) processes of group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def process_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descends_from(pid: int, ancestor: int) -> bool:
    current = parent_pid(pid)
    while current is not None and current > 1:
        if current == ancestor:
            return True
        current = parent_pid(current)
    return False


class WorkerProcess:
    """A real `celery -A worker.main worker` in its own process group, logging to a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        argv = [
            sys.executable, "-m", "celery", "-A", "worker.main", "worker",
            "--pool", "prefork", "--concurrency", "1", "-Q", ",".join(consumed_queues(settings)),
            "--without-heartbeat", "--without-gossip", "--without-mingle",
            "--loglevel", "INFO", "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h",
        ]  # fmt: skip
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=settings_environment(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pool_pids(self) -> list[int]:
        return [pid for pid in process_group(self.pid) if pid != self.pid]

    def engine_pids(self) -> list[int]:
        """The sandboxed engine processes (`python -I -m core.service.engine.process`) of this
        worker's jobs, seen from the host (inside bubblewrap's PID namespace they have other
        numbers)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            argv = process_cmdline(int(entry.name))
            if (
                argv
                and Path(argv[0]).name.startswith("python")
                and "core.service.engine.process" in argv
                and descends_from(int(entry.name), self.pid)
            ):
                found.append(int(entry.name))
        return found

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL to the whole group, parent and pool process at once (a machine lost)."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait()
        wait_for(lambda: not process_group(self.pid), timeout=10.0, what="the group to die")

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll `condition` until it is truthy; return its value, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def harden_config(
    *, epochs: int = 4, batch_size: int = 64, **hyperparameters: Any
) -> dict[str, Any]:
    """A job config as the API stores it (every field filled in); small enough for seconds."""
    return {
        "threat_model": {"norm": "linf", "epsilon": 0.2, "step_size": None, "steps": 7},
        "hyperparameters": {
            "epochs": epochs,
            "batch_size": batch_size,
            "schedule": "slow_start_fast_decay",
            "peak_lr": 0.05,
            "warmup_fraction": 0.5,
            "decay": "linear",
            "decay_gamma": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "loss": "pgd",
            "trades_beta": 6.0,
            "attack": "pgd",
            "epsilon_rampup_fraction": 0.3,
            **hyperparameters,
        },
        "evaluation": {
            # PGD alone, as evaluation was before its presets: the worker's tests stay cheap;
            # the default ensemble through a real job is the engine's own test.
            "attack": "fast",
            "attack_steps": 10,
            "restarts": 1,
            "epsilons": None,
            "max_samples": 200,
        },
        "seed": 0,
    }


@dataclass
class Service:
    """The database, store and queue of one configuration, with an owner and their model."""

    settings: Settings
    context: ServiceContext
    queue: JobQueue
    owner_id: str
    model: Model

    def create_job(
        self,
        config: dict[str, Any],
        *,
        enqueue: bool = True,
        model_id: str | None = None,
        dataset: str = "builtin:digits",
    ) -> str:
        with transaction(self.context.sessions) as session:
            job, _ = lifecycle.create_job(
                session,
                owner_id=self.owner_id,
                kind="harden",
                model_id=model_id or self.model.id,
                dataset=dataset,
                config=config,
            )
            job_id = job.id
        if enqueue:
            self.queue.enqueue(job_id)
        return job_id

    def job(self, job_id: str) -> Job:
        with self.context.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def events(self, job_id: str) -> list[JobEvent]:
        with self.context.sessions() as session:
            return list(
                session.scalars(
                    select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
                )
            )

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        with self.context.sessions() as session:
            return list(
                session.scalars(
                    select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.epoch)
                )
            )

    def model_row(self, model_id: str) -> Model:
        with self.context.sessions() as session:
            row = session.get(Model, model_id)
            assert row is not None
            return row

    def load(self, model: Model) -> RobustModel:
        with self.context.store.local_copy(model.storage_key) as path:
            return load_model(
                path,
                input_shape=DIGITS_INPUT,
                num_classes=model.num_classes,
                architecture=model.architecture,
            )

    def wait_for_job(
        self, job_id: str, *, statuses: set[str], workers: list[WorkerProcess], timeout: float = 240
    ) -> Job:
        def reached() -> Job | None:
            job = self.job(job_id)
            return job if job.status in statuses else None

        deadline = time.monotonic() + timeout
        while (job := reached()) is None:
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.log_path}\n{w.log_tail()}" for w in workers)
                pytest.fail(
                    f"job {job_id} is {self.job(job_id).status}, not {statuses}, after "
                    f"{timeout:.0f}s; worker logs:\n{logs}"
                )
            time.sleep(0.2)
        return job


def build_service(settings: Settings, net: nn.Module) -> Service:
    """The Service of a configuration: an owner with an API key and `net` as their model."""
    context = ServiceContext.build(settings)
    with transaction(context.sessions) as session:
        created = auth.create_key(session, owner_name=f"owner-{uuid.uuid4().hex[:6]}")
        owner_id = created.record.owner_id
    return Service(
        settings=settings,
        context=context,
        queue=JobQueue(settings),
        owner_id=owner_id,
        model=store_digits_model(context, owner_id, net),
    )


def store_digits_model(context: ServiceContext, owner_id: str, net: nn.Module) -> Model:
    """The pretrained digits CNN as an uploaded state_dict, in the store and the database."""
    model = model_from_module(
        copy.deepcopy(net),
        architecture="builtin:digits_cnn",
        input_shape=DIGITS_INPUT,
        num_classes=10,
    )
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "digits_cnn.pt"
        save_model(model, local)
        return register_digits_model(
            context,
            owner_id,
            local,
            name="digits-state_dict",
            format="state_dict",
            architecture="builtin:digits_cnn",
        )


def store_torchscript_model(
    context: ServiceContext, owner_id: str, scripted: torch.jit.ScriptModule
) -> Model:
    """A TorchScript digits model registered as if it had been uploaded before uploads were
    checked: in the store and the database, never through the upload's checks."""
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / "model.pt"
        torch.jit.save(scripted, str(local))
        return register_digits_model(
            context,
            owner_id,
            local,
            name="digits-torchscript",
            format="torchscript",
            architecture=None,
        )
