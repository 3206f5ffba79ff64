"""A pids cgroup of its own for each sandboxed process tree, where the host lets us make one:
the real cap on how many processes a user's model may start."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PIDS_CGROUP_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/pids"))


class PidsCgroup:
    """A pids cgroup (v2, or v1's pids hierarchy) holding one sandboxed process tree."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def procs_file(self) -> Path:
        return self.folder / "cgroup.procs"

    @classmethod
    def create(cls, max_processes: int) -> PidsCgroup | None:
        for root in PIDS_CGROUP_ROOTS:
            folder = root / f"robustify-{secrets.token_hex(6)}"
            try:
                folder.mkdir()
            except OSError:
                continue
            try:
                # A real cgroup comes with the kernel's control files; a plain folder does not.
                if not (folder / "pids.current").exists():
                    raise OSError("not a pids cgroup")
                (folder / "pids.max").write_text(str(max_processes))
                return cls(folder)
            except OSError:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        return None

    def remove(self) -> None:
        # A cgroup can only be removed once empty; its last processes may take a moment to go.
        for _ in range(50):
            try:
                self.folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                self._kill_members()
                threading.Event().wait(0.05)
        log.warning("could not remove the sandbox's cgroup %s", self.folder)

    def _kill_members(self) -> None:
        with contextlib.suppress(OSError):
            for pid in self.procs_file.read_text().split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), 9)
