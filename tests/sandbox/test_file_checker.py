"""The upload checker is an object its owner starts and closes (the API's lifespan): closing it
ends the warm sandboxed child it keeps."""

from __future__ import annotations

import time

import pytest

from core.service.errors import ServiceUnavailable, status_and_code
from core.service.sandbox.runner import Sandbox
from core.service.sandbox.validation import FileChecker, ValidationLimits


def test_closing_the_checker_ends_its_warm_child():
    checker = FileChecker(
        ValidationLimits(timeout_seconds=30, memory_bytes=2 * 1024**3, sandbox=Sandbox("none"))
    )
    checker.start()
    deadline = time.monotonic() + 60
    while checker.pool.warm is None and time.monotonic() < deadline:
        time.sleep(0.05)
    warm = checker.pool.warm
    assert warm is not None, "no warm checker was started"
    assert warm.alive()

    checker.close()

    assert warm.child.process.poll() is not None
    assert not warm.folder.exists()
    assert checker.pool.warm is None


def test_a_closed_checker_refuses_new_work_with_a_503_error_and_starts_nothing():
    checker = FileChecker(
        ValidationLimits(timeout_seconds=30, memory_bytes=2 * 1024**3, sandbox=Sandbox("none"))
    )
    checker.start()
    checker.close()

    with pytest.raises(ServiceUnavailable, match="shutting down") as refused:
        checker.pool.take()

    assert status_and_code(refused.value) == (503, "service_unavailable")
    assert checker.pool.warm is None
