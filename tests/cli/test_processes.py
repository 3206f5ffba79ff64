"""cli.processes: a supervised child is stopped with SIGTERM, or killed with its whole process
group when it does not stop in time."""

from __future__ import annotations

import os
import signal
import sys
import time

from cli.processes import ChildProcess

# Ignores SIGTERM, starts a grandchild, writes its pid to the file argv[1] names, then waits.
STUBBORN = """
import pathlib, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
pathlib.Path(sys.argv[1] + ".tmp").write_text(str(grandchild.pid))
pathlib.Path(sys.argv[1] + ".tmp").rename(sys.argv[1])
time.sleep(60)
"""


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_child_that_obeys_sigterm_stops_without_being_killed():
    child = ChildProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], os.environ
    )
    child.start()
    time.sleep(0.5)

    code = child.stop(timeout=10)

    assert code == -signal.SIGTERM
    assert not running(child.pid)


def test_child_ignoring_sigterm_is_killed_with_its_group_after_the_timeout(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    child = ChildProcess("stubborn", [sys.executable, "-c", STUBBORN, str(pid_file)], os.environ)
    child.start()
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the child never started its grandchild"
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())

    started = time.monotonic()
    code = child.stop(timeout=1)

    assert code == -signal.SIGKILL
    assert 1 <= time.monotonic() - started < 10
    time.sleep(0.2)  # SIGKILL is delivered at once; a zombie left behind counts as ended
    assert not running(child.pid) and not running(grandchild)
