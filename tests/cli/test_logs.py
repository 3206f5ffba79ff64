"""core.service.logs: JSON lines on the configured stream, with the job id inside job_context."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from core.service.config import Settings
from core.service.logs import configure_logging, job_context


@pytest.fixture()
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(Settings(log_level="INFO"), stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_line_with_timestamp_level_logger_message(log_stream):
    logging.getLogger("core.service.jobs.pipeline").warning("epoch %d of %d", 3, 10)

    [record] = records(log_stream)
    assert record["level"] == "WARNING"
    assert record["logger"] == "core.service.jobs.pipeline"
    assert record["message"] == "epoch 3 of 10"
    assert record["timestamp"].endswith("Z") and "T" in record["timestamp"]
    assert "job_id" not in record


def test_records_inside_job_context_carry_the_job_id(log_stream):
    log = logging.getLogger("core.service.jobs.pipeline")
    with job_context("job_123"):
        log.info("claimed")
    log.info("idle")

    claimed, idle = records(log_stream)
    assert claimed["job_id"] == "job_123"
    assert "job_id" not in idle


def test_job_contexts_of_two_threads_do_not_mix(log_stream):
    log = logging.getLogger("core.service.jobs.pipeline")
    barrier = threading.Barrier(2)

    def run(job_id: str) -> None:
        with job_context(job_id):
            barrier.wait()
            log.info("running %s", job_id)

    threads = [threading.Thread(target=run, args=(job_id,)) for job_id in ("job_a", "job_b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {(r["job_id"], r["message"]) for r in records(log_stream)} == {
        ("job_a", "running job_a"),
        ("job_b", "running job_b"),
    }


def test_extra_fields_and_exceptions_are_kept(log_stream):
    try:
        raise ValueError("NaN loss")
    except ValueError:
        logging.getLogger("worker").exception("job failed", extra={"epoch": 4})

    [record] = records(log_stream)
    assert record["epoch"] == 4
    assert "ValueError: NaN loss" in record["exception"]


def test_configuring_twice_keeps_one_handler(log_stream):
    configure_logging(Settings(), stream=log_stream)

    logging.getLogger("api").warning("once")

    assert len(records(log_stream)) == 1
