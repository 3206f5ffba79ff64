"""The worker's side of a job's sandboxed engine process: start it in its job folder, read its
messages, answer its questions, and take the files it names, trusting none of it.

The engine runs a user's model, which is a program: every line it sends is bounded and parsed
strictly (core.service.engine.protocol), a file it names must be a plain file right inside the job
folder (no path, no link followed, no FIFO), of bounded size. A process that dies, or breaks the
protocol, ends as an EngineFailure with a code and a message that say so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from pydantic import ValidationError

from core.service.engine.protocol import (
    CHILD_MESSAGE,
    FILE_NAME_PATTERN,
    MAX_LINE_BYTES,
    ChildMessage,
    Reply,
    encode,
)
from core.service.errors import JobCode
from core.service.sandbox.runner import Sandbox, SandboxedProcess

log = logging.getLogger(__name__)

ENGINE_ARGV = (sys.executable, "-I", "-m", "core.service.engine.process")
# Between a job's ranks gloo finds its peers on the sandbox's own loopback.
DISTRIBUTED_ENVIRONMENT = {"GLOO_SOCKET_IFNAME": "lo"}
STDERR_TAIL_BYTES = 16 * 1024
MAX_REPORT_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024


class EngineFailure(Exception):
    """The engine process failed, died or broke the protocol; `code` is the job's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _StderrTail(threading.Thread):
    """Drains the engine's stderr, keeping only its last bytes (a model may print gigabytes)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(name="engine-stderr", daemon=True)
        self.stream = stream
        self.tail = bytearray()
        self.total = 0

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            fd = self.stream.fileno()
            for chunk in iter(lambda: os.read(fd, 65536), b""):
                self.total += len(chunk)
                self.tail += chunk
                del self.tail[:-STDERR_TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.tail).decode("utf-8", "replace")


class EngineChannel:
    """A running engine process and the protocol with it; `close()` kills what is left."""

    def __init__(self, process: SandboxedProcess, job_dir: Path) -> None:
        self.process, self.job_dir = process, job_dir
        popen = process.process
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        self.stdin, self.stdout = popen.stdin, popen.stdout
        self.stderr = _StderrTail(popen.stderr)
        self.stderr.start()
        self.buffer = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.stdout, selectors.EVENT_READ)
        self.started = time.monotonic()
        self.first_message: float | None = None  # seconds from the start: the start-up cost

    @classmethod
    def start(
        cls,
        sandbox: Sandbox,
        job_dir: Path,
        *,
        read_only: Sequence[Path] = (),
        devices: Sequence[str] = (),
        environment: Mapping[str, str] | None = None,
        world_size: int = 1,
    ) -> EngineChannel:
        """Start the engine (under torchrun for `world_size` > 1: rank 0 talks on the pipe)."""
        distributed = world_size > 1
        process = sandbox.start(
            engine_argv(world_size),
            job_dir=job_dir,
            read_only=read_only,
            devices=devices,
            environment={**(DISTRIBUTED_ENVIRONMENT if distributed else {}), **(environment or {})},
            loopback_sockets=distributed,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return cls(process, job_dir)

    # -- messages ---------------------------------------------------------------------------

    def receive(self, timeout: float) -> ChildMessage | None:
        """The next message, or None if none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE_BYTES:
                raise self._broken(f"a line longer than {MAX_LINE_BYTES} bytes")
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                return None
            chunk = os.read(self.stdout.fileno(), 65536)
            if not chunk:
                raise self._died()
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        if len(line) > MAX_LINE_BYTES:
            raise self._broken(f"a line longer than {MAX_LINE_BYTES} bytes")
        if self.first_message is None:
            self.first_message = time.monotonic() - self.started
        try:
            return CHILD_MESSAGE.validate_json(line)
        except (ValidationError, ValueError, RecursionError) as exc:
            raise self._broken(
                f"a message that is not in the protocol ({_first_line(exc)})"
            ) from exc

    def reply(self, *, go: bool) -> None:
        try:
            self.stdin.write(encode(Reply(go=go)))
            self.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise self._died() from exc

    # -- the files it made ------------------------------------------------------------------

    @contextlib.contextmanager
    def output(self, name: str, *, max_bytes: int) -> Iterator[_Bounded]:
        """A file the engine wrote, opened safely: a plain file named `name` right in the job
        folder, no link followed, at most `max_bytes`."""
        if not re.fullmatch(FILE_NAME_PATTERN, name):
            raise self._broken(f"a file name that is not a plain name: {name[:100]!r}")
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self._folder_fd()
            )
        except OSError as exc:
            raise self._broken(f"a file it did not write ({name}: {exc.strerror})") from exc
        handle = os.fdopen(fd, "rb")
        with handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._broken(f"{name}, which is not a plain file")
            if info.st_size > max_bytes:
                raise EngineFailure(
                    JobCode.ENGINE_OUTPUT_TOO_LARGE,
                    f"the job's engine wrote {name} of {info.st_size} bytes, more than the "
                    f"limit of {max_bytes}",
                )
            yield _Bounded(handle, max_bytes)

    def read_json(self, name: str, *, max_bytes: int = MAX_REPORT_BYTES) -> Any:
        with self.output(name, max_bytes=max_bytes) as handle:
            raw = handle.read()
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise self._broken(f"{name}, which is not JSON ({_first_line(exc)})") from exc

    def remove(self, name: str) -> None:
        """Drop a file once stored: the folder holds one epoch's files at a time, not all."""
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self._folder_fd())

    def _folder_fd(self) -> int:
        if not hasattr(self, "_dir_fd"):
            self._dir_fd = os.open(self.job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        return self._dir_fd

    # -- endings ----------------------------------------------------------------------------

    def _died(self) -> EngineFailure:
        code = self._exit_code(wait=10.0)
        last = self.stderr_tail().strip().splitlines()[-1:] or ["(nothing on stderr)"]
        if (code is not None and code < 0) or code == 128 + 9:
            how = "was killed (out of memory?)"
        else:
            how = f"exited with code {code}"
        return EngineFailure(
            JobCode.ENGINE_CRASHED, f"the job's engine process {how} before it finished: {last[0]}"
        )

    def _broken(self, what: str) -> EngineFailure:
        self.process.close()
        return EngineFailure(
            JobCode.ENGINE_PROTOCOL_ERROR, f"the job's engine process sent {what}; it was stopped"
        )

    def _exit_code(self, *, wait: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.process.wait(timeout=wait)
        return None

    def stderr_tail(self) -> str:
        self.stderr.join(timeout=1.0)
        return self.stderr.text()

    def close(self) -> None:
        self.process.close()
        self.selector.close()
        if hasattr(self, "_dir_fd"):
            os.close(self._dir_fd)
        tail = self.stderr_tail().strip()
        if tail:
            log.info(
                "engine stderr (last %d of %d bytes):\n%s",
                len(tail.encode()),
                self.stderr.total,
                tail,
            )
        log.info(
            "engine process ran %.1f s (first message after %s s)",
            time.monotonic() - self.started,
            "-" if self.first_message is None else f"{self.first_message:.1f}",
        )

    def __enter__(self) -> EngineChannel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def engine_argv(world_size: int) -> list[str]:
    """The engine's command: itself, or torchrun starting `world_size` of it on this machine
    (torch.distributed elastic). --standalone's rendezvous on "localhost" would need name
    resolution, which the sandbox has not: 127.0.0.1, a free port, by address. --no-python keeps
    each rank's interpreter isolated (-I) as the single process is."""
    if world_size == 1:
        return list(ENGINE_ARGV)
    return [
        sys.executable, "-I", "-m", "torch.distributed.run", "--nnodes=1",
        "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", "--local-addr=127.0.0.1",
        f"--nproc-per-node={world_size}", "--max-restarts=0", "--no-python", *ENGINE_ARGV,
    ]  # fmt: skip


class _Bounded:
    """A reader that refuses to go past `limit` bytes (a file may grow after its fstat)."""

    def __init__(self, handle: BinaryIO, limit: int) -> None:
        self.handle, self.limit, self.seen = handle, limit, 0

    def read(self, size: int = -1) -> bytes:
        want = self.limit + 1 - self.seen if size < 0 else min(size, self.limit + 1 - self.seen)
        data = self.handle.read(max(want, 0))
        self.seen += len(data)
        if self.seen > self.limit:
            raise EngineFailure(
                JobCode.ENGINE_OUTPUT_TOO_LARGE,
                f"a file of the job's engine grew past {self.limit} bytes",
            )
        return data

    def chunks(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK_BYTES), b"")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
