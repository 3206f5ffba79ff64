"""The warm sandboxed children that check uploads (core.service.sandbox.validation_child): one
started ahead of each request, so a check does not wait seconds for torch to import.

Each child has imported the engine and waits for exactly one request, then exits; a fresh one is
started behind it. Its input folder is bound read-only into its sandbox when it starts; the
upload is linked (or copied) into it when its request comes. The pool is an object its owner
(the API's startup) creates and closes: nothing here is built at import.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from core.service.errors import ServiceUnavailable
from core.service.sandbox.runner import Sandbox, SandboxedProcess

MAX_RESULT_BYTES = 1024 * 1024
CHILD_MODULE = "core.service.sandbox.validation_child"
# A warm checker imports torch before it says it is ready; that start never counts against the
# check's own timeout, but a checker that cannot start in this long is given up.
START_TIMEOUT_SECONDS = 300.0
READY = b"ready\n"


class WarmChecker:
    """One sandboxed child that has imported the engine (or is doing so) and will answer one
    request about the file placed in its read-only input folder."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.folder = Path(tempfile.mkdtemp(prefix="robustify-check-"))
        self.inbox = self.folder / "input"
        self.inbox.mkdir()
        (self.folder / "scratch").mkdir()
        try:
            self.child: SandboxedProcess = sandbox.start(
                [sys.executable, "-m", CHILD_MODULE],
                job_dir=self.folder,
                read_only=[self.inbox],
                environment={"TMPDIR": str(self.folder / "scratch")},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        self.started = time.monotonic()
        self.ready = False
        self.timed_out = False

    def alive(self) -> bool:
        return self.child.process.poll() is None

    def wait_ready(self) -> bool:
        if not self.ready:
            line = _read_line(self.child.process, deadline=self.started + START_TIMEOUT_SECONDS)
            self.ready = line == READY
        return self.ready

    def check(self, file: Path, request: dict[str, Any], *, timeout_seconds: float) -> bytes | None:
        """Hand the file and the request over; the answer line, or None if the child died or
        the time ran out (then `timed_out` says which)."""
        placed = self.inbox / ("upload" + "".join(file.suffixes[-2:]))
        _link_or_copy(file, placed)
        message = {**request, "path": str(placed)}
        stdin = self.child.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
        except OSError:
            return None
        deadline = time.monotonic() + timeout_seconds
        self.timed_out = False
        line = _read_line(self.child.process, deadline=deadline)
        if line is None and time.monotonic() >= deadline:
            self.timed_out = True
        return line

    def close(self) -> None:
        self.child.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _link_or_copy(source: Path, target: Path) -> None:
    # A hard link is free; the checker's input folder is read-only inside its sandbox, so the
    # stored file cannot be changed through it. Another filesystem needs a copy.
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _read_line(process: subprocess.Popen[bytes], *, deadline: float) -> bytes | None:
    """One line from the child's stdout, at most MAX_RESULT_BYTES, before `deadline`."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(timeout=remaining):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            buffer += chunk
            if b"\n" in buffer:
                return bytes(buffer[: buffer.index(b"\n") + 1])
            if len(buffer) > MAX_RESULT_BYTES:
                return None


class CheckerPool:
    """Warm checkers in one sandbox, one kept ready. They are started from one long-lived
    thread: bubblewrap's --die-with-parent follows the thread that started it, which must
    outlive it."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.lock = threading.Lock()
        self.warm: WarmChecker | None = None
        self.closed = False
        self.starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robustify-checker")

    def take(self) -> WarmChecker:
        """A checker for one request (the warm one if it is alive), and another started behind
        it. The caller closes the one it took."""
        with self.lock:
            if self.closed:
                raise ServiceUnavailable("the service is shutting down: upload again shortly")
            warm, self.warm = self.warm, None
            # Submitted under the lock: close() cannot shut the starter down in between.
            fresh = None if warm is not None and warm.alive() else self._submit_start()
        if fresh is None and warm is not None:
            checker = warm
        else:
            if warm is not None:
                warm.close()
            assert fresh is not None
            checker = fresh.result()
        self.refill()
        return checker

    def _submit_start(self) -> Future[WarmChecker]:
        return self.starter.submit(WarmChecker, self.sandbox)

    def refill(self) -> None:
        """Start a warm checker in the background unless one is kept already."""
        with self.lock:
            if not self.closed:
                self.starter.submit(self._start_one)

    def _start_one(self) -> None:
        with self.lock:
            if self.warm is not None or self.closed:
                return
        checker = WarmChecker(self.sandbox)
        with self.lock:
            kept = self.warm is None and not self.closed
            if kept:
                self.warm = checker
        if not kept:
            checker.close()

    def close(self) -> None:
        """End the warm checker and the starting thread (they also die with this process)."""
        with self.lock:
            self.closed = True
        self.starter.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            checker, self.warm = self.warm, None
        if checker is not None:
            checker.close()
