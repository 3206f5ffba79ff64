"""The worker's side of the engine protocol against real child processes that break it: each
ends as an EngineFailure with a code that says what happened, promptly, and the child is gone;
and the bounds a child's report is held to."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.service.engine.channel import EngineChannel, EngineFailure
from core.service.engine.protocol import CHILD_MESSAGE, InterpolationReport
from core.service.sandbox.runner import Sandbox

StartChild = Callable[[str], EngineChannel]


@pytest.fixture()
def start_child(tmp_path: Path) -> Iterator[StartChild]:
    channels: list[EngineChannel] = []

    def start(script: str) -> EngineChannel:
        process = Sandbox(kind="none").start(
            [sys.executable, "-c", script],
            job_dir=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        channel = EngineChannel(process, tmp_path)
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        channel.close()


def failure_of(channel: EngineChannel) -> EngineFailure:
    with pytest.raises(EngineFailure) as raised:
        for _ in range(40):
            channel.receive(0.5)
    return raised.value


def test_an_endless_line_is_a_protocol_error_and_the_child_is_stopped(
    start_child: StartChild,
) -> None:
    channel = start_child("import sys, time; print('x' * 200000, end=''); time.sleep(60)")

    failure = failure_of(channel)

    assert failure.code == "engine_protocol_error" and "longer than" in failure.message
    assert channel.process.process.poll() is not None


def test_a_message_outside_the_protocol_is_a_protocol_error(start_child: StartChild) -> None:
    bad = '{"type": "epoch", "metrics": {}, "checkpoint": "../../etc/passwd", "weights": "w"}'
    channel = start_child(f"print({bad!r}, flush=True); import time; time.sleep(60)")

    failure = failure_of(channel)

    assert failure.code == "engine_protocol_error" and "not in the protocol" in failure.message


def test_a_child_that_exits_without_a_word_crashed(start_child: StartChild) -> None:
    channel = start_child("import sys; print('segfault-ish', file=sys.stderr); sys.exit(3)")

    failure = failure_of(channel)

    assert failure.code == "engine_crashed"
    assert "exited with code 3" in failure.message and "segfault-ish" in failure.message


def test_a_named_file_must_be_a_plain_file_inside_the_folder(
    start_child: StartChild, tmp_path: Path
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text("not the engine's")
    (tmp_path / "link.ckpt").symlink_to(outside)
    os.mkfifo(tmp_path / "fifo.ckpt")
    (tmp_path / "big.ckpt").write_bytes(b"0" * 2000)
    (tmp_path / "ok.ckpt").write_bytes(b"checkpoint")
    channel = start_child("import time; time.sleep(60)")

    codes = {}
    for name in ("link.ckpt", "fifo.ckpt", "../outside.txt", "big.ckpt"):
        with pytest.raises(EngineFailure) as raised, channel.output(name, max_bytes=1000):
            pass
        codes[name] = raised.value.code
    with channel.output("ok.ckpt", max_bytes=1000) as handle:
        assert b"".join(handle.chunks()) == b"checkpoint"

    assert codes == {
        "link.ckpt": "engine_protocol_error",
        "fifo.ckpt": "engine_protocol_error",
        "../outside.txt": "engine_protocol_error",
        "big.ckpt": "engine_output_too_large",
    }


INTERPOLATION = {
    "type": "interpolation", "from_epoch": 3, "fraction": 0.25, "val_clean_accuracy": 0.99,
    "val_robust_accuracy": 0.07, "message": "handed back 0.25 of the way",
    "trials": [{"fraction": 0.5, "val_clean_accuracy": 0.9, "val_robust_accuracy": 0.2,
                "kept_clean": False}],
}  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [{"fraction": 1.0}, {"fraction": 0.0}, {"from_epoch": 0}, {"message": "x" * 501},
     {"trials": []}, {"val_clean_accuracy": 1.5}, {"handed_back": True}],
)  # fmt: skip
def test_an_interpolation_report_out_of_bounds_is_not_in_the_protocol(
    change: dict[str, Any],
) -> None:
    assert isinstance(CHILD_MESSAGE.validate_python(INTERPOLATION), InterpolationReport)
    with pytest.raises(ValidationError):
        CHILD_MESSAGE.validate_python({**INTERPOLATION, **change})


def test_the_result_facts_the_engine_passes_on_are_fields_of_both_sides():
    # Finished(**facts) is built from FinetuneResult by these names: a field renamed on either
    # side would otherwise fail only inside a job, as its engine_error.
    from core.robust.finetune_results import FinetuneResult
    from core.service.engine.process import RESULT_FACTS
    from core.service.engine.protocol import Finished

    assert set(RESULT_FACTS) <= {field.name for field in dataclasses.fields(FinetuneResult)}
    assert set(RESULT_FACTS) <= set(Finished.model_fields)
