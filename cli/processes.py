"""Child processes the CLI supervises (the worker of `robustify up`, one worker per GPU), and
turning SIGTERM/SIGINT into an exception so that `finally` blocks stop them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: the command should shut down cleanly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise `Stopped` (in the main thread).

    uvicorn restores these handlers after its own graceful shutdown and raises the signal
    again, which lands here too, so the code after the server still runs.
    """
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_force(event: threading.Event) -> Iterator[None]:
    """While stopping, another Ctrl-C or SIGTERM means "now": it sets `event` instead of raising
    (an exception here would abandon the children halfway through their shutdown)."""
    previous = {signum: signal.signal(signum, lambda *_: event.set()) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class ChildProcess:
    """A command run in its own process group, so that stopping it reaches its children too
    (a Celery prefork worker's pool), and a terminal's Ctrl-C reaches only the supervisor."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        self.popen = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        log.info("%s started", self.name, extra={"pid": self.popen.pid})
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, "start() first"
        return self.popen.pid

    def poll(self) -> int | None:
        assert self.popen is not None, "start() first"
        return self.popen.poll()

    def terminate(self) -> None:
        """SIGTERM to the main process only: a Celery worker then does its warm shutdown (its
        pool processes, signalled directly, would die mid-task)."""
        assert self.popen is not None, "start() first"
        if self.popen.poll() is None:
            log.info("stopping %s", self.name, extra={"pid": self.pid})
            self.popen.send_signal(signal.SIGTERM)

    def kill_and_wait(self) -> int:
        """SIGKILL to whatever is left in the group (the process, or a pool process whose parent
        died), then reap it; returns the exit code."""
        assert self.popen is not None, "start() first"
        if self.popen.poll() is None:
            log.warning("%s still running: killing it", self.name, extra={"pid": self.pid})
        self._signal_group(signal.SIGKILL)
        code = self.popen.wait()
        log.info("%s stopped", self.name, extra={"pid": self.pid, "exit_code": code})
        return code

    def stop(self, timeout: float, *, force: threading.Event | None = None) -> int:
        return stop_all([self], timeout, force=force)[0]

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:  # the group is already empty
            pass


def stop_all(
    children: Sequence[ChildProcess], timeout: float, *, force: threading.Event | None = None
) -> list[int]:
    """SIGTERM to each child, then SIGKILL to each group after `timeout` seconds (or as soon as
    `force` is set); returns the exit codes."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    while any(child.poll() is None for child in children) and time.monotonic() < deadline:
        if force is not None and force.is_set():
            break
        time.sleep(0.1)
    return [child.kill_and_wait() for child in children]


def robustify_argv(*args: str) -> list[str]:
    """The `robustify` command, as this same interpreter and installation runs it."""
    return [sys.executable, "-m", "cli", *args]
