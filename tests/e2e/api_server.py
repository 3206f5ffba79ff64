"""A uvicorn server running api.app.create_app(Settings()) in its own process group, configured
by ROBUSTIFY_* variables, as the brief of the end-to-end tests has it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from worker_harness import REPO_ROOT, process_group, settings_environment, wait_for

from core.service.config import Settings

SERVE = (
    "import uvicorn; from api.app import create_app; from core.service.config import Settings; "
    "uvicorn.run(create_app(Settings()), host='127.0.0.1', port={port})"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ApiServer:
    """uvicorn serving create_app(Settings()) in its own process group, logging to a file."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-c", SERVE.format(port=self.port)],
                cwd=REPO_ROOT,
                env=settings_environment(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_healthy(self, timeout: float = 90.0) -> None:
        def healthy() -> bool:
            if self.popen.poll() is not None:
                pytest.fail(f"the API server exited; its log:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=timeout, what="the API to answer /healthz", interval=0.3)

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        wait_for(lambda: not process_group(self.popen.pid), timeout=10, what="the API to exit")
