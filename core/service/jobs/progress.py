"""The job's progress as its run goes: which phase, which batch of which epoch, the fraction
done and the time left, written to the job's row at most once a second."""

from __future__ import annotations

import time
from typing import Any

from core.service.engine.channel import EngineFailure
from core.service.engine.protocol import BatchDone, PhaseStarted, ProbeBatch
from core.service.errors import JobCode
from core.service.jobs.run_context import JobContext

# Progress is written at most this often (and at the latest this long after a batch).
PROGRESS_SECONDS = 1.0


class ProgressTracker:
    """Turns the engine's batches into the job's progress; the latest is held until `flush`."""

    def __init__(self, context: JobContext) -> None:
        self.context = context
        self.probe_share = 0.0  # of the progress bar, set by the probe's first batch
        self.pending: dict[str, Any] | None = None
        self.last_write = 0.0
        self.started = time.monotonic()

    def phase(self, message: PhaseStarted) -> None:
        context = self.context
        if message.phase == "training":
            self._write(phase="training", epoch=context.epochs_done, epochs=context.epochs)
        else:
            self._write(phase=message.phase)

    def batch(self, message: BatchDone) -> None:
        context = self.context
        if message.epoch != context.epochs_done + 1 or message.step > message.steps:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR,
                f"the job's engine reported batch {message.step} of epoch {message.epoch} "
                f"after epoch {context.epochs_done}",
            )
        epochs, steps = max(context.epochs, 1), message.steps
        trained = ((message.epoch - 1) * steps + message.step) / (epochs * steps)
        # The probe (when there was one) had the first part of the bar: progress never goes back.
        done = self.probe_share + (1 - self.probe_share) * trained
        elapsed = time.monotonic() - self.started
        self.pending = {
            "phase": "training",
            "epoch": message.epoch,
            "epochs": context.epochs,
            "step": message.step,
            "steps_per_epoch": steps,
            "fraction": round(min(done, 1.0), 4),
            "loss": message.loss,
            "eta_seconds": round(elapsed / done * (1 - done), 1) if done > 0 else None,
        }
        if message.step == steps:
            self.flush(force=True)

    def probe(self, message: ProbeBatch) -> None:
        if self.context.epochs_done or message.candidate > message.candidates:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR,
                "the job's engine probed the learning rate mid-training",
            )
        probed = ((message.candidate - 1) * message.steps + message.step) / (
            message.candidates * message.steps
        )
        self.probe_share = message.job_share
        done = probed * message.job_share
        self.pending = {
            "phase": "probing_lr",
            "candidate": message.candidate,
            "candidates": message.candidates,
            "step": message.step,
            "steps": message.steps,
            "fraction": round(min(done, 1.0), 4),
        }

    def flush(self, *, force: bool = False) -> None:
        """Write the latest batch's progress at most once a second, and at the latest a second
        after it came: what a reader sees is never older than that."""
        if self.pending is None:
            return
        if not force and time.monotonic() - self.last_write < PROGRESS_SECONDS:
            return
        progress, self.pending = self.pending, None
        self.last_write = time.monotonic()
        self._write(**progress)

    def _write(self, **progress: Any) -> None:
        self.context.update(progress=progress)
