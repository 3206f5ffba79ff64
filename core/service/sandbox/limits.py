"""The sandboxed side of the limits: a process in the sandbox caps its own memory growth and CPU
time once its imports are done, before it opens the user's file."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger(__name__)


def limit_self(*, memory_bytes: int | None, cpu_seconds: float | None) -> None:
    """Cap this (sandboxed) process's memory growth and CPU time. Call it after the imports and
    before touching the user's file: CUDA builds of torch map gigabytes of address space for
    their libraries alone, which a plain RLIMIT_AS of a few GiB would refuse."""
    if memory_bytes is not None:
        baseline = _address_space_bytes()
        if baseline is not None:
            _set_limit(resource.RLIMIT_AS, baseline + memory_bytes)
    if cpu_seconds is not None:
        # RLIMIT_CPU counts from the process's start: the imports' CPU time is not the file's.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _set_limit(resource.RLIMIT_CPU, int(usage.ru_utime + usage.ru_stime + cpu_seconds) + 2)
    _set_limit(resource.RLIMIT_CORE, 0)


def _address_space_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _set_limit(which: int, value: int) -> None:
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, hard))
    except (ValueError, OSError):
        log.warning("could not set resource limit %s", which)
