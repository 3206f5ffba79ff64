"""A job of several ranks in the sandbox: torchrun's rendezvous and gloo work over the sandbox's
own loopback when the job may open inet sockets (without, test_sandbox_isolation's seccomp test
refuses them); the host stays out of reach."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.service.config import Settings
from core.service.engine.channel import DISTRIBUTED_ENVIRONMENT, engine_argv
from core.service.sandbox.runner import Sandbox, sandbox_from_settings

ALL_REDUCE = r"""
import json, socket, torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
report = {"rank": dist.get_rank(), "sum": total.item()}
try:
    socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    report["host_redis"] = "connected"
except OSError as exc:
    report["host_redis"] = type(exc).__name__
print(json.dumps(report), flush=True)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def bubblewrap() -> Sandbox:
    sandbox = sandbox_from_settings(Settings(sandbox="bubblewrap", sandbox_max_processes=64))
    assert sandbox.isolated
    return sandbox


def run_two_ranks(sandbox: Sandbox, job: Path, *, loopback_sockets: bool) -> tuple[int, str]:
    job.mkdir()
    (job / "all_reduce.py").write_text(ALL_REDUCE)
    # The engine's own torchrun command, with the script in place of the engine.
    argv = [*engine_argv(2)[: -len(("-m", "core.service.engine.process"))], "all_reduce.py"]
    with sandbox.start(
        argv, job_dir=job, environment=DISTRIBUTED_ENVIRONMENT, loopback_sockets=loopback_sockets,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as child:  # fmt: skip
        out, _err = child.process.communicate(timeout=90)
    return child.process.returncode, out.decode()


def test_two_ranks_all_reduce_over_the_sandbox_loopback_and_not_reach_the_host(
    bubblewrap: Sandbox, tmp_path: Path
):
    code, out = run_two_ranks(bubblewrap, tmp_path / "job", loopback_sockets=True)
    reports = sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["rank"])
    assert code == 0
    assert [(r["rank"], r["sum"]) for r in reports] == [(0, 3.0), (1, 3.0)]
    # Its own network namespace: the host's 127.0.0.1 is not this one.
    assert {r["host_redis"] for r in reports} <= {"ConnectionRefusedError", "OSError"}


def test_a_single_process_engine_is_started_without_torchrun():
    assert engine_argv(1) == [sys.executable, "-I", "-m", "core.service.engine.process"]
    assert "--nproc-per-node=4" in engine_argv(4)
