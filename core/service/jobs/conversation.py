"""The parent's side of the engine's run: each message the engine sends is stored by the unit
of its phase (evaluate before, fine-tune, and the end that hands over the result), then the
engine is told whether to go on."""

from __future__ import annotations

from core.service.engine import protocol
from core.service.engine.channel import EngineChannel, EngineFailure
from core.service.jobs.epochs import save_epoch
from core.service.jobs.lease import JobStopped
from core.service.jobs.progress import ProgressTracker
from core.service.jobs.reports import store_before
from core.service.jobs.run_context import JobContext
from core.service.jobs.training_reports import store_guard, store_interpolation, store_probe

# How long the parent waits for a message before it looks at the lease and the progress.
POLL_SECONDS = 0.5


def converse(
    context: JobContext, progress: ProgressTracker, engine: EngineChannel
) -> protocol.Finished:
    """Answer the engine until it ends; its questions are answered in the order asked."""
    while True:
        message = engine.receive(POLL_SECONDS)
        progress.flush()
        if message is None:
            # A long phase (an evaluation) stops at once on a cancel or a lost lease.
            if context.keeper.should_stop():
                raise JobStopped
            continue
        if isinstance(message, protocol.Finished):
            return message
        if isinstance(message, protocol.Stopped):
            raise JobStopped
        if isinstance(message, protocol.Failed):
            raise EngineFailure(message.code, message.message)
        _store(context, progress, engine, message)
        _answer(context, engine)


def _store(
    context: JobContext,
    progress: ProgressTracker,
    engine: EngineChannel,
    message: protocol.Question,
) -> None:
    match message:
        case protocol.PhaseStarted():
            progress.phase(message)
        case protocol.Evaluated():  # the uploaded model's evaluation
            store_before(context, engine, message)
        case protocol.ProbeBatch():  # fine-tuning, from here on
            progress.probe(message)
        case protocol.ProbeReport():
            store_probe(context, message)
        case protocol.BatchDone():
            progress.batch(message)
        case protocol.GuardReport():
            store_guard(context, message)
        case protocol.EpochDone():
            save_epoch(context, engine, message)
        case protocol.InterpolationReport():
            store_interpolation(context, message)


def _answer(context: JobContext, engine: EngineChannel) -> None:
    # A cancel recorded before this read is obeyed before the engine's next batch: the
    # flag is read for every question, not at the next heartbeat.
    go = not context.keeper.lost and not context.cancel_requested()
    engine.reply(go=go)
    if not go:
        raise JobStopped
