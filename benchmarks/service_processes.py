"""The service's processes for its benchmarks: a uvicorn API server and a Celery worker, each in
its own process group and configured by ROBUSTIFY_* variables (as tests/e2e/api_server.py and
tests/worker/worker_harness.py start them, without pytest), a fresh PostgreSQL database, a
private Redis database, an API key, the pretrained digits model as an upload, and the CPU time
and memory of a process group read from /proc."""

from __future__ import annotations

import copy
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text
from torch import nn

from core.robust.models.modelio import model_from_module, save_model
from core.service import auth
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.db import transaction
from core.service.migrate import upgrade_database
from worker.celery_app import consumed_queues

REPO_ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# A Redis database of the benchmarks' own: the tests use 9 and 11; flushed before each use.
BENCH_REDIS_URL = "redis://127.0.0.1:6379/14"
DIGITS_INPUT = (1, 8, 8)
TERMINAL_STATUSES = {"succeeded", "failed", "cancelled"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SERVE = (
    "import uvicorn; from api.app import create_app; from core.service.config import Settings; "
    "uvicorn.run(create_app(Settings()), host='127.0.0.1', port={port}, log_level='warning')"
)


def wait_until(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


def settings_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """This environment without ROBUSTIFY_*, plus `settings` as ROBUSTIFY_* variables."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ROBUSTIFY_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"ROBUSTIFY_{name.upper()}"] = str(
            value.resolve() if isinstance(value, Path) else value
        )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new PostgreSQL database (dropped at the end), as the tests make one per session."""
    name = f"robustify_bench_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def service_settings(data_dir: Path, *, database_url: str | None, **overrides: Any) -> Settings:
    """Settings of one run, migrated: its data dir, the database, the benchmarks' Redis queue
    (emptied), one torch thread on the CPU (the in-process runs use one too)."""
    redis.Redis.from_url(BENCH_REDIS_URL).flushdb()
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "broker_url": BENCH_REDIS_URL,
        "torch_threads": 1,
        "worker_device": "cpu",
        "log_format": "text",
        "log_level": "WARNING",
        **overrides,
    }
    settings = Settings(**values)
    upgrade_database(settings)
    return settings


def create_api_key(settings: Settings) -> str:
    context = ServiceContext.build(settings)
    try:
        with transaction(context.sessions) as session:
            return auth.create_key(session, owner_name=f"bench-{uuid.uuid4().hex[:6]}").key
    finally:
        context.engine.dispose()


def code_state() -> dict[str, Any]:
    """The commit the service ran from and the files changed beside it (the working tree is
    what the processes import: other work in progress included)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout

    # Porcelain lines are "XY path": the status columns may start with a space.
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_files": changed}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """A child in its own process group, logging to a file; stopped with its whole group."""

    def __init__(self, argv: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.log_path.stem} exited; its log:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL to the whole group at once (a worker's running job is thrown away with it:
        its engine process dies with its parent)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()


class ApiServer(ServiceProcess):
    """uvicorn serving create_app(Settings()) from ROBUSTIFY_* variables."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [sys.executable, "-c", SERVE.format(port=self.port)], env=env, log_path=log_path
        )

    def wait_healthy(self, timeout: float = 90.0) -> None:
        def healthy() -> bool:
            self.check_alive()
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=timeout, what="the API to answer /healthz", interval=0.3)


class Worker(ServiceProcess):
    """`celery -A worker.main worker` with one prefork child, as `robustify worker` runs it."""

    def __init__(self, settings: Settings, env: dict[str, str], log_path: Path) -> None:
        argv = [
            sys.executable, "-m", "celery", "-A", "worker.main", "worker",
            "--pool", "prefork", "--concurrency", "1", "-Q", ",".join(consumed_queues(settings)),
            "--without-heartbeat", "--without-gossip", "--without-mingle",
            "--loglevel", "WARNING", "--hostname", f"bench-{uuid.uuid4().hex[:8]}@%h",
        ]  # fmt: skip
        super().__init__(argv, env=env, log_path=log_path)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the comm (which may hold spaces): state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


class TreeCpu:
    """The CPU time (user+system) of a process and all its descendants, sampled: each process
    seen counts with the last value read for it, its own time only (a parent's cutime would
    count a reaped child twice), so a process that ends loses at most one interval's time.
    The job's engine runs in a sandbox (bubblewrap, its own PID namespace) under the worker's
    pool process: seen from here, a descendant like any other."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[tuple[int, str], float] = {}  # (pid, start time) -> CPU seconds
        self.sample()
        self.baseline = dict(self.seen)  # what the processes alive now had already spent

    def sample(self) -> None:
        parents: dict[int, int] = {}
        times: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
                pid = int(entry.name)
                parents[pid] = int(fields[1])
                # utime, stime (stat fields 14, 15) and the start time (22), in clock ticks.
                times[pid] = (fields[19], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
        for pid, (started, seconds) in times.items():
            ancestor = pid
            while ancestor not in (self.root, 0, 1) and ancestor in parents:
                ancestor = parents[ancestor]
            if ancestor == self.root:
                self.seen[(pid, started)] = seconds

    @property
    def seconds(self) -> float:
        return sum(value - self.baseline.get(key, 0.0) for key, value in self.seen.items())


def descendants(root: int) -> list[int]:
    """The live processes below `root` (children, their children, ...)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found = []
    for pid in parents:
        ancestor = parents[pid]
        while ancestor not in (root, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == root:
            found.append(pid)
    return found


def pss_bytes(pid: int) -> int:
    """A process's proportional set size (shared pages divided among their sharers), in
    bytes: summed over processes that share pages (forked children), it counts them once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """VmRSS (or VmHWM) of a process, in bytes; 0 once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def digits_model_file(net: nn.Module, path: Path) -> Path:
    """`net` (a builtin:digits_cnn) saved as the state_dict a user uploads."""
    model = model_from_module(
        copy.deepcopy(net),
        architecture="builtin:digits_cnn",
        input_shape=DIGITS_INPUT,
        num_classes=10,
    )
    save_model(model, path)
    return path


def upload_digits_model(client: httpx.Client, path: Path) -> str:
    with path.open("rb") as file:
        response = client.post(
            "/v1/models",
            files={"file": (path.name, file, "application/octet-stream")},
            data={
                "name": "digits-cnn",
                "format": "state_dict",
                "architecture": "builtin:digits_cnn",
                "num_classes": "10",
                "input_shape": "[1,8,8]",
            },
        )
    if response.status_code != 201:
        raise RuntimeError(f"upload refused: {response.status_code} {response.text}")
    return str(response.json()["id"])


def submit_job(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"job refused: {response.status_code} {response.text}")
    return str(response.json()["id"])


def poll_until_ended(
    client: httpx.Client,
    job_id: str,
    *,
    timeout: float,
    interval: float,
    watch: list[ServiceProcess],
    on_poll: Callable[[], None] | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        if on_poll is not None:
            on_poll()
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in TERMINAL_STATUSES:
            return job
        for process in watch:
            process.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
        time.sleep(interval)
