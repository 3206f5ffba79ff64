"""The sandbox that every process running a user's model lives in: the upload check and the
worker's training and evaluation.

A TorchScript model is a program, so its process gets Debian's bubblewrap (`bwrap`): new user,
mount, PID, network, IPC and UTS namespaces; a root filesystem that holds only the system's and
Python's folders (read-only) and the one job folder it works in (read-write, at its own path);
a private /tmp; no network but a loopback of its own; an empty environment (no database URL,
broker URL or key); no capabilities. Beside the namespaces: a cap on processes (a pids cgroup of
its own where the host lets us make one, RLIMIT_NPROC otherwise), no core dumps, a cap on open
files, and a seccomp filter (core.service.sandbox.seccomp) that refuses tracing, mounts, new
namespaces, non-Unix sockets and other system calls a model never needs. Memory and CPU time are
capped by the sandboxed entry point itself (`limit_self`, core.service.sandbox.limits), after its
imports and before it opens the user's file, so the cap is on what the file costs. The pids
cgroup lives in core.service.sandbox.cgroups, what the sandbox binds from this host in
core.service.sandbox.host.

Where bubblewrap is missing or the kernel refuses user namespaces, the "none" sandbox runs the
same child with the same limits and environment but without namespaces; TorchScript is then
refused unless the operator allows it (`allow_unsandboxed_torchscript`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.service.config import Settings
from core.service.errors import ModelLoadError
from core.service.sandbox import seccomp
from core.service.sandbox.cgroups import PidsCgroup
from core.service.sandbox.host import SYSTEM_FILES, SYSTEM_FOLDERS, code_root, python_folders

log = logging.getLogger(__name__)

SandboxKind = Literal["bubblewrap", "none"]
MAX_OPEN_FILES = 4096
# The environment a sandboxed process starts with: nothing inherited.
BASE_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1",
}


class SandboxUnavailable(RuntimeError):
    """The operator asked for bubblewrap and it does not work on this host."""


@dataclass(frozen=True)
class Sandbox:
    """How to start a process that runs a user's model. Build it with `sandbox_from_settings`."""

    kind: SandboxKind
    max_processes: int = 256
    bwrap: str | None = None
    allow_unsandboxed_torchscript: bool = False
    # Folders (besides the system's) the Python child needs to read: interpreter, venv, code.
    python_folders: tuple[str, ...] = field(default_factory=tuple)

    @property
    def isolated(self) -> bool:
        return self.kind == "bubblewrap"

    def check_may_run(self, model_format: str) -> None:
        """Refuse to run a TorchScript program without a sandbox, unless the operator allows."""
        if model_format == "torchscript" and not self.isolated:
            if not self.allow_unsandboxed_torchscript:
                raise ModelLoadError(
                    "TorchScript models are programs and this service has no sandbox to run "
                    "them in (bubblewrap with user namespaces is not available on its host); "
                    "upload a state_dict or safetensors file with its architecture instead"
                )

    def command(
        self,
        argv: Sequence[str],
        *,
        job_dir: Path,
        read_only: Sequence[Path] = (),
        devices: Sequence[str] = (),
    ) -> list[str]:
        """The argv that runs `argv` in this sandbox, working in `job_dir` (read-write, but for
        the folders or files inside it named in `read_only`: the inputs it may not change).
        A `read_only` path outside `job_dir` (a dataset in the worker's cache) is shown, at the
        same path, read-only; nothing else outside the job folder is."""
        job = str(job_dir.resolve())
        if not self.isolated:
            return list(argv)
        assert self.bwrap is not None
        command = [
            self.bwrap,
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--hostname",
            "sandbox",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
        ]
        for folder in SYSTEM_FOLDERS:
            if os.path.lexists(folder):
                command += ["--ro-bind", folder, folder]
        for path in SYSTEM_FILES:
            if os.path.exists(path):
                command += ["--ro-bind", path, path]
        for folder in self.python_folders:
            command += ["--ro-bind", folder, folder]
        for device in devices:
            command += ["--dev-bind", device, device]
        if devices:
            # CUDA's driver reads the GPU's topology from sysfs.
            command += ["--ro-bind", "/sys", "/sys"]
        command += ["--bind", job, job]
        for shown in read_only:
            command += ["--ro-bind", str(shown.resolve()), str(shown.resolve())]
        command += ["--chdir", job]
        for name, value in BASE_ENVIRONMENT.items():
            command += ["--setenv", name, value]
        command += ["--setenv", "HOME", job, "--setenv", "TMPDIR", "/tmp"]
        command += ["--setenv", "PYTHONPATH", code_root(), "--"]
        return command + list(argv)

    def start(
        self,
        argv: Sequence[str],
        *,
        job_dir: Path,
        read_only: Sequence[Path] = (),
        environment: Mapping[str, str] | None = None,
        devices: Sequence[str] = (),
        loopback_sockets: bool = False,
        **popen: Any,
    ) -> SandboxedProcess:
        """Start `argv` in the sandbox; the caller talks to it over stdin/stdout (pass
        `stdin=subprocess.PIPE` etc.) and must `close()` the result. `loopback_sockets`: the
        process may open inet sockets in its own network namespace (a job of several ranks)."""
        cgroup = PidsCgroup.create(self.max_processes)
        limits = [f"ulimit -c 0; ulimit -n {MAX_OPEN_FILES}"]
        # RLIMIT_NPROC counts a user's processes host-wide and spares root: the cgroup is the
        # real cap where it exists; the rlimit serves an unprivileged worker without one.
        if cgroup is None and os.geteuid() != 0:
            limits.append(f"ulimit -u {self.max_processes}")
        if cgroup is not None:
            limits.append(f'echo $$ > "{cgroup.procs_file}"')
        wrapper = ["/bin/sh", "-c", "; ".join([*limits, 'exec "$@"']), "robustify-sandbox"]
        env = {**BASE_ENVIRONMENT, "HOME": str(job_dir), "TMPDIR": str(job_dir)}
        env["PYTHONPATH"] = code_root()
        env.update(environment or {})
        command = self.command(argv, job_dir=job_dir, read_only=read_only, devices=devices)
        seccomp_fd = (
            seccomp.filter_file_descriptor(loopback_sockets=loopback_sockets)
            if self.isolated
            else None
        )
        if self.isolated:
            # bwrap clears the environment and sets the sandbox's own; pass the extra names on.
            extra: list[str] = []
            for name, value in (environment or {}).items():
                extra += ["--setenv", name, value]
            if seccomp_fd is not None:
                extra += ["--seccomp", str(seccomp_fd)]
            split = command.index("--")
            command = command[:split] + extra + command[split:]
        try:
            process = subprocess.Popen(
                wrapper + command,
                cwd=job_dir,
                env=env,
                close_fds=True,
                pass_fds=() if seccomp_fd is None else (seccomp_fd,),
                **popen,
            )
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        return SandboxedProcess(process, cgroup)

    def probe(self) -> str | None:
        """None if a sandboxed Python starts here; else what went wrong."""
        with _probe_folder() as folder:
            try:
                child = self.start(
                    [sys.executable, "-c", "import sys; sys.exit(0)"],
                    job_dir=folder,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:
                return str(exc)
            try:
                _out, err = child.process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                return "a sandboxed Python did not start within 60 s"
            finally:
                child.close()
            if child.process.returncode != 0:
                return err.decode("utf-8", "replace").strip()[-500:] or "exit code != 0"
        return None


class SandboxedProcess:
    """A started sandboxed process and its pids cgroup; `close()` kills what is left."""

    def __init__(self, process: subprocess.Popen[Any], cgroup: PidsCgroup | None) -> None:
        self.process, self.cgroup = process, cgroup

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self.cgroup is not None:
            self.cgroup.remove()

    def __enter__(self) -> SandboxedProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@contextlib.contextmanager
def _probe_folder() -> Iterator[Path]:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="robustify-probe-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sandbox_from_settings(settings: Settings) -> Sandbox:
    """The sandbox this host gives: bubblewrap where a sandboxed Python starts here (a probe of
    some 50 ms, made by each caller at its start: the API's startup, each job), else "none" for
    `sandbox="auto"`; `sandbox="bubblewrap"` that fails raises SandboxUnavailable."""
    plain = Sandbox(
        kind="none",
        max_processes=settings.sandbox_max_processes,
        allow_unsandboxed_torchscript=settings.allow_unsandboxed_torchscript,
    )
    if settings.sandbox == "none":
        return plain
    bwrap = shutil.which("bwrap")
    problem = "bubblewrap (bwrap) is not installed" if bwrap is None else None
    if bwrap is not None:
        candidate = Sandbox(
            kind="bubblewrap",
            max_processes=settings.sandbox_max_processes,
            bwrap=bwrap,
            allow_unsandboxed_torchscript=settings.allow_unsandboxed_torchscript,
            python_folders=python_folders(),
        )
        problem = candidate.probe()
        if problem is None:
            return candidate
    if settings.sandbox == "bubblewrap":
        raise SandboxUnavailable(f"the bubblewrap sandbox does not work here: {problem}")
    log.warning(
        "no sandbox for user models (%s): TorchScript uploads are %s",
        problem,
        "allowed by the operator" if settings.allow_unsandboxed_torchscript else "refused",
    )
    return plain
