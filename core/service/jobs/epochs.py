"""Storing the fine-tuning's epochs: each epoch's checkpoint and weights in the store, then its
row, event and metrics, exactly once, before the engine goes on."""

from __future__ import annotations

from sqlalchemy import select

from core.service import catalog
from core.service.engine.channel import EngineChannel, EngineFailure
from core.service.engine.protocol import EpochDone
from core.service.errors import JobCode
from core.service.ids import new_id
from core.service.jobs import lifecycle
from core.service.jobs.run_context import JobContext
from core.service.tables import Checkpoint

# Files a job's engine hands back: a checkpoint holds the weights, the optimizer's momentum and
# the best epoch's weights, so a few times the model.
CHECKPOINT_SIZE_FACTOR = 4
CHECKPOINT_SLACK_BYTES = 64 * 1024**2


def checkpoint_key(job_id: str, *, attempt: int, epoch: int) -> str:
    """Where an epoch's resumable checkpoint lives (its weights: catalog.weights_key_beside).

    Each attempt writes its own files: a worker that lost its lease and has not noticed yet
    never overwrites the files that the rows of the worker holding the job point to."""
    return f"jobs/{job_id}/checkpoints/attempt-{attempt}/epoch-{epoch:04d}.pt"


def checkpoint_rows(context: JobContext) -> list[Checkpoint]:
    """The job's stored epochs, in order (those of earlier attempts included)."""
    with context.factory() as session:
        return list(
            session.scalars(
                select(Checkpoint)
                .where(Checkpoint.job_id == context.job.id)
                .order_by(Checkpoint.epoch)
            )
        )


def save_epoch(context: JobContext, engine: EngineChannel, message: EpochDone) -> None:
    """Store the epoch's two files, then its row, event and metrics in one transaction,
    before the engine (waiting for the answer) goes on: exactly once per epoch."""
    context.stop_if_lease_lost()
    metrics = message.metrics
    if metrics.epoch != context.epochs_done + 1 or metrics.epoch > context.epochs:
        raise EngineFailure(
            JobCode.ENGINE_PROTOCOL_ERROR,
            f"the job's engine reported epoch {metrics.epoch} after epoch {context.epochs_done}",
        )
    job, store = context.job, context.store
    key = checkpoint_key(job.id, attempt=job.attempts, epoch=metrics.epoch)
    model_bytes = context.settings.max_model_bytes
    checkpoint_bytes = CHECKPOINT_SIZE_FACTOR * model_bytes + CHECKPOINT_SLACK_BYTES
    with engine.output(message.checkpoint, max_bytes=checkpoint_bytes) as handle:
        stored = store.put_stream(key, handle.chunks())
    with engine.output(message.weights, max_bytes=model_bytes) as handle:
        store.put_stream(catalog.weights_key_beside(key), handle.chunks())
    engine.remove(message.checkpoint)
    engine.remove(message.weights)
    job.metrics = lifecycle.record_epoch(
        context.factory,
        job.id,
        worker_id=context.worker_id,
        checkpoint=Checkpoint(
            id=new_id("ckpt"),
            job_id=job.id,
            epoch=metrics.epoch,
            storage_key=key,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            metrics=metrics.model_dump(),
        ),
        message=f"epoch {metrics.epoch}: loss {metrics.train_loss:.4f}, "
        f"val robust accuracy {metrics.val_robust_accuracy}",
    )
    context.epochs_done = metrics.epoch
    context.stop_if_lease_lost()
