"""The whole service as `robustify up` in a child process, on a free port with its own data dir,
for the demo (and the tests): started, waited for, given an API key, stopped cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from cli.processes import ChildProcess, robustify_argv

READY_SECONDS = 120.0
# `up` gives its worker this long to hand back a job; the demo waits a little longer for `up`.
WORKER_STOP_SECONDS = 10
STOP_SECONDS = 30.0
# Settings that may follow the caller into the embedded service: where and how jobs run. The
# rest (a database or broker URL) would point the demo at some other service's state.
PASSED_SETTINGS = ("ROBUSTIFY_WORKER_DEVICE", "ROBUSTIFY_TORCH_THREADS", "ROBUSTIFY_LOG_LEVEL")


class ServiceFailed(Exception):
    """The embedded service did not start, or a command against it failed."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _LoggedChild(ChildProcess):
    """A ChildProcess whose output goes to a file, not to the terminal it was started from."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(name, argv, env)
        self.log_path = log_path

    def start(self) -> _LoggedChild:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self


class EmbeddedService:
    """`robustify up` on 127.0.0.1:<free port>, state in `data_dir`, output in `log_path`.

    Use as a context manager (started on entry, stopped on exit), or `start()`, `wait_ready()`
    and `stop()`. `settings` are extra ROBUSTIFY_* variables for it (e.g. ROBUSTIFY_TORCH_THREADS).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        log_path: Path,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("ROBUSTIFY_") or name in PASSED_SETTINGS
        }
        env.update(ROBUSTIFY_DATA_DIR=str(self.data_dir), ROBUSTIFY_LOG_FORMAT="text")
        env.update(settings or {})
        self.env = env
        argv = robustify_argv(
            "up", "--port", str(self.port), "--stop-timeout", str(WORKER_STOP_SECONDS)
        )
        self.process = _LoggedChild("robustify up", argv, env, log_path)

    def __enter__(self) -> EmbeddedService:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedService:
        """Start it; returns at once (`wait_ready` waits for it)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        return self

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        """Until /readyz answers 200 (database and broker reachable)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServiceFailed(
                    f"`robustify up` exited with code {self.process.poll()}; its log "
                    f"({self.log_path}) ends:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServiceFailed(
                    f"the service at {self.url} was not ready after {timeout:.0f} s; its log "
                    f"({self.log_path}) ends:\n{self.log_tail()}"
                )
            time.sleep(0.3)

    def create_api_key(self, name: str, *, owner: str | None = None) -> str:
        """A new API key, made by `robustify keys create` against the service's database."""
        argv = robustify_argv("keys", "create", name, *(["--owner", owner] if owner else []))
        completed = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if completed.returncode != 0:
            raise ServiceFailed(f"`robustify keys create` failed: {completed.stderr.strip()}")
        return completed.stdout.strip().splitlines()[-1]

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM (the API stops, then its worker), SIGKILL after `timeout`; the exit code."""
        if self.process.popen is None:
            return 0
        return self.process.stop(timeout)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
