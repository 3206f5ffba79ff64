"""What a sandbox on this host is built from: the system folders every process reads, the
folders our Python and its code live in, and the GPU's device files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# What a sandboxed process may read besides its job folder: the system's programs and
# libraries, and the dynamic loader's and locale's few files under /etc (nothing else of /etc:
# no hostname, no passwd, no TLS keys).
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
)


def code_root() -> str:
    """The folder our `core` package is imported from here, so that a sandboxed child imports
    the very same code (an editable install, a copy on sys.path, or site-packages)."""
    import core

    return os.path.dirname(os.path.dirname(os.path.realpath(core.__file__)))


def python_folders() -> tuple[str, ...]:
    """What a sandboxed `python -m core...` must read: the interpreter's installation, the
    virtual environment, and our own package's folder (an editable install points there).
    Never the project folder as a whole: it may hold the embedded service's data."""
    import core

    folders = {
        os.path.realpath(sys.base_prefix),
        os.path.realpath(sys.prefix),
        os.path.realpath(os.path.dirname(core.__file__)),
    }
    # A venv's python is a link to the base interpreter, which may live elsewhere.
    folders.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    # Remove folders inside others, and the system folders bound anyway.
    ordered = sorted(folders)
    kept: list[str] = []
    for folder in ordered:
        if any(folder == k or folder.startswith(k.rstrip("/") + "/") for k in kept):
            continue
        if any(folder.startswith(s + "/") or folder == s for s in SYSTEM_FOLDERS):
            continue
        kept.append(folder)
    return tuple(kept)


def gpu_devices() -> list[str]:
    """The device files CUDA needs (/dev/nvidia*), to pass into a sandbox that uses a GPU."""
    dev = Path("/dev")
    return sorted(str(path) for path in dev.glob("nvidia*") if not path.is_dir())
