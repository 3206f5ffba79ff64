"""The sandbox itself (core.service.sandbox.runner): a process in it reaches no file outside its
job folder, no network, no inherited secret, and no more processes than allowed."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.service.config import Settings
from core.service.sandbox.runner import (
    Sandbox,
    SandboxUnavailable,
    sandbox_from_settings,
)

PROBE = r"""
import json, os, socket, sys
report = {"env": sorted(os.environ), "uid": os.getuid()}
secret, marker = sys.argv[1], sys.argv[2]
try:
    report["secret"] = open(secret, "rb").read().hex()
except OSError as exc:
    report["secret_error"] = type(exc).__name__
try:
    with open(marker, "w") as handle:
        handle.write("changed")
    report["marker_written"] = True
except OSError as exc:
    report["marker_error"] = type(exc).__name__
report["hostname_file"] = os.path.exists("/etc/hostname")
report["connections"] = {}
for port in (5432, 6379):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        report["connections"][port] = "connected"
    except OSError as exc:
        report["connections"][port] = type(exc).__name__
with open("inside.txt", "w") as handle:
    handle.write("job folder is writable")
try:
    with open(os.path.join("inputs", "new.txt"), "w") as handle:
        handle.write("x")
    report["input_written"] = True
except OSError as exc:
    report["input_error"] = type(exc).__name__
print(json.dumps(report))
"""

FORK_BOMB = r"""
import os, time
started = 0
try:
    for _ in range(500):
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        started += 1
except OSError:
    pass
print(started)
"""


@pytest.fixture(scope="module")
def bubblewrap() -> Sandbox:
    # CI and the Dockerfile install bubblewrap: a host without it fails here, by design.
    sandbox = sandbox_from_settings(Settings(sandbox="bubblewrap", sandbox_max_processes=32))
    assert sandbox.isolated
    return sandbox


def run_in(sandbox: Sandbox, code: str, job: Path, *args: str) -> str:
    with sandbox.start(
        [sys.executable, "-c", code, *args],
        job_dir=job,
        read_only=[job / "inputs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as child:
        out, err = child.process.communicate(timeout=120)
        assert child.process.returncode == 0, err.decode()
    return out.decode()


def test_sandboxed_process_reaches_nothing_outside_its_job_folder(
    bubblewrap: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("ROBUSTIFY_DATABASE_URL", "postgresql://secret@db/robustify")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"the database password")
    marker = tmp_path / "marker.txt"
    marker.write_text("original")
    before = marker.stat().st_mtime_ns
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)

    report = json.loads(run_in(bubblewrap, PROBE, job, str(secret), str(marker)))

    assert "secret" not in report and report["secret_error"] == "FileNotFoundError"
    # A write outside the job folder lands in the sandbox's own scratch root, if anywhere.
    assert marker.read_text() == "original" and marker.stat().st_mtime_ns == before
    assert not any(name.startswith("ROBUSTIFY_") for name in report["env"])
    assert report["hostname_file"] is False
    # No network namespace of the host, and seccomp refuses non-Unix sockets outright.
    assert set(report["connections"].values()) <= {"ConnectionRefusedError", "OSError"}
    assert (job / "inside.txt").read_text() == "job folder is writable"
    assert "input_written" not in report and report["input_error"] == "OSError"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job", "marker.txt", "secret.txt"]


def test_sandboxed_process_cannot_fork_past_its_cap(bubblewrap: Sandbox, tmp_path: Path):
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    started = int(run_in(bubblewrap, FORK_BOMB, job))
    assert started < 32


def test_host_without_bubblewrap_falls_back_and_says_so(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox = sandbox_from_settings(Settings(sandbox="auto"))
    assert sandbox.kind == "none" and not sandbox.isolated
    with pytest.raises(Exception, match="TorchScript models are programs"):
        sandbox.check_may_run("torchscript")
    sandbox.check_may_run("state_dict")


SYSCALLS = r"""
import ctypes, json, os, socket, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
report = {}
report["ptrace"] = (libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno())
report["unshare"] = (libc.unshare(0x10000000), ctypes.get_errno())
try:
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    report["inet"] = "made"
except OSError as exc:
    report["inet"] = exc.errno
socket.socketpair()
thread = threading.Thread(target=lambda: None)
thread.start()
thread.join()
report["subprocess"] = subprocess.run(["/bin/true"]).returncode
print(json.dumps(report))
"""


def test_seccomp_refuses_tracing_namespaces_and_inet_sockets_but_not_threads(
    bubblewrap: Sandbox, tmp_path: Path
):
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    report = json.loads(run_in(bubblewrap, SYSCALLS, job))
    assert report["ptrace"] == [-1, errno.EPERM]
    assert report["unshare"] == [-1, errno.EPERM]
    assert report["inet"] == errno.EAFNOSUPPORT
    assert report["subprocess"] == 0


def test_bubblewrap_asked_for_but_missing_refuses_to_start(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="not installed"):
        sandbox_from_settings(Settings(sandbox="bubblewrap"))
