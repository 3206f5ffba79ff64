"""`robustify up`: the API and a real Celery worker process on one machine, stopped cleanly."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("api.app") is None, reason="api/app.py is not there yet"
)

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # it ended while we looked
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status is left


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_up_serves_health_and_stops_its_worker_on_sigterm(robustify, tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    stdout, stderr = tmp_path / "up.out", tmp_path / "up.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        up = subprocess.Popen(
            [robustify, "up", "--port", str(port)],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("ROBUSTIFY_")},
                "ROBUSTIFY_DATA_DIR": str(data_dir),
            },
            stdout=out,
            stderr=err,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for(lambda: answers_200(f"{base}/healthz"), STARTUP_SECONDS), (
            stderr.read_text()[-3000:]
        )
        assert answers_200(f"{base}/readyz")
        # The worker, and the prefork pool process it forks once it is ready.
        assert wait_for(lambda: len(descendants(up.pid)) >= 2, STARTUP_SECONDS)
        worker_pids = [pid for pid in descendants(up.pid) if b"worker" in command_line(pid)]
        assert worker_pids
        # The API's warm upload checker (a sandboxed child) ends with the API: its shutdown
        # closes it, and it dies with its parent anyway.
        helper_pids = [pid for pid in descendants(up.pid) if pid not in worker_pids]

        up.send_signal(signal.SIGTERM)
        returncode = up.wait(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()

    assert returncode == 0, stderr.read_text()[-3000:]
    assert [pid for pid in worker_pids if running(pid)] == []
    assert wait_for(lambda: not any(running(pid) for pid in helper_pids), 15)
    banner = stdout.read_text()
    assert f"http://127.0.0.1:{port}" in banner and str(data_dir.resolve()) in banner
