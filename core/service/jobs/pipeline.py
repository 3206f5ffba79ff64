"""Run one job: claim it, stage its inputs in a job folder, run the engine there in the sandbox,
and store what it hands back (checkpoints, reports, the hardened model) and its events.

A worker's broker message is a token (`take_token`): the fairest queued job of its world size
is claimed (core.service.jobs.dispatch) and run (`run_next_job`), and its end wakes its owner's
waiting jobs.

This is the trusted side: it holds the database and the artifact store, and never runs the
user's model. The model runs in core.service.engine.process, a sandboxed child with nothing but the
job folder, which asks before every batch whether to go on; the answer comes from the job's cancel
flag and from the lease, which a lease keeper thread renews.

The run, top to bottom (`_run_phases`): load (staging) -> the engine's evaluate before and
fine-tune, each message stored by its phase's unit (conversation) -> evaluate after and
register (result), over one JobContext (run_context).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.service.broker import world_size_of
from core.service.config import Settings
from core.service.context import ServiceContext
from core.service.engine.channel import EngineChannel, EngineFailure
from core.service.errors import (
    Conflict,
    DatasetError,
    JobCode,
    ModelLoadError,
    StorageFull,
    error_code,
)
from core.service.jobs import dispatch, lifecycle, waiting
from core.service.jobs.conversation import converse
from core.service.jobs.endings import end_failed, end_stopped
from core.service.jobs.lease import JobStopped, LeaseKeeper
from core.service.jobs.progress import ProgressTracker
from core.service.jobs.result import register_result
from core.service.jobs.run_context import JobContext
from core.service.jobs.staging import load_model_row, stage_inputs
from core.service.logs import job_context
from core.service.sandbox.host import gpu_devices
from core.service.sandbox.runner import Sandbox, sandbox_from_settings
from core.service.storage import ArtifactStore
from core.service.tables import Job

log = logging.getLogger(__name__)

# send(job_id, world_size): a broker message "look at job X" on that world size's queue.
SendToken = Callable[[str, int], None]


def take_token(job_id: str, settings: Settings, *, ranks: int, send: SendToken) -> None:
    """A worker's message "look at job X", taken as a token for X's world size: with too few
    of this worker's `ranks` for X it is sent on to X's own queue, untouched; otherwise the
    fairest queued job of that size is claimed and run here (run_next_job)."""
    context = ServiceContext.build(settings)
    try:
        wanted = _world_size(context, job_id)
        if wanted > ranks:
            log.info("job %s: %d ranks asked, %d here: sent on", job_id, wanted, ranks)
            send(job_id, wanted)
            return
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        ran = run_next_job(context, world_size=wanted, worker_id=worker_id, send=send)
        if ran is None:
            log.info("message for job %s: no queued job may run now; dropped", job_id)
    finally:
        context.engine.dispose()


def run_next_job(
    context: ServiceContext, *, world_size: int, worker_id: str, send: SendToken
) -> str | None:
    """Claim the fairest queued job of `world_size` (core.service.jobs.dispatch) and run it to
    its end; returns its id, None when no owner has one it may run now. Under a running limit
    its end sends a token for each world size its owner has jobs waiting in: a place of theirs
    is free again, and the tokens that came while they had none were spent."""
    settings = context.settings
    job = dispatch.claim_next_job(
        context.sessions,
        world_size=world_size,
        worker_id=worker_id,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        max_running_per_owner=settings.max_running_jobs_per_owner,
    )
    if job is None:
        return None
    with job_context(job.id):
        log.info("job %s: picked up by %s", job.id, worker_id)
        try:
            run_claimed_job(
                job,
                settings=settings,
                factory=context.sessions,
                store=context.store,
                worker_id=worker_id,
            )
        finally:
            if settings.max_running_jobs_per_owner is not None:
                _wake_waiting_jobs(context, job.owner_id, send)
    return job.id


def _world_size(context: ServiceContext, job_id: str) -> int:
    with context.sessions() as session:
        job = session.get(Job, job_id)
        return world_size_of(job.config or {}) if job is not None else 1


def _wake_waiting_jobs(context: ServiceContext, owner_id: str, send: SendToken) -> None:
    try:
        with context.sessions() as session:
            tokens = waiting.wake_tokens(session, owner_id)
        for waiting_job_id, world_size in tokens:
            send(waiting_job_id, world_size)
    except Exception:  # the sweeper re-sends long-queued jobs: a lost token only delays
        log.exception("could not send the tokens of owner %s's waiting jobs", owner_id)


def run_job(
    job_id: str,
    *,
    settings: Settings,
    factory: sessionmaker[Session],
    store: ArtifactStore,
    worker_id: str,
) -> None:
    """Claim and run `job_id` to its end (or do nothing if another worker holds it).

    For tests and tools that run one named job in-process: it claims with no running limit
    and no fair choice; workers go through take_token."""
    job = lifecycle.claim_job(
        factory,
        job_id,
        worker_id=worker_id,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
    )
    if job is None:
        log.info("job %s: not claimed (held elsewhere, ended, or out of attempts)", job_id)
        return
    run_claimed_job(job, settings=settings, factory=factory, store=store, worker_id=worker_id)


def run_claimed_job(
    job: Job,
    *,
    settings: Settings,
    factory: sessionmaker[Session],
    store: ArtifactStore,
    worker_id: str,
) -> None:
    """Run a job this worker has just claimed (core.service.jobs.dispatch) to its end."""
    job_id = job.id
    keeper = LeaseKeeper(factory, job_id, worker_id=worker_id, settings=settings)
    keeper.start()
    try:
        context = JobContext(
            job=job,
            settings=settings,
            factory=factory,
            store=store,
            worker_id=worker_id,
            keeper=keeper,
        )
        _run_to_its_end(context)
    finally:
        keeper.stop()


def _run_to_its_end(context: JobContext) -> None:
    """Run the job's phases; whatever stops them ends the job with its reason."""
    progress = ProgressTracker(context)
    try:
        _run_phases(context, progress)
    except JobStopped:
        end_stopped(context, pending_progress=progress.pending)
    except EngineFailure as exc:
        end_failed(context, exc.code, exc.message)
    except (ModelLoadError, DatasetError, StorageFull) as exc:
        end_failed(context, error_code(exc), str(exc))
    except Conflict:
        log.warning("job %s: lease lost to another worker; leaving it", context.job.id)
    except Exception as exc:  # the job fails with the reason; the worker lives on
        log.exception("job %s failed", context.job.id)
        end_failed(context, JobCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


def _run_phases(context: JobContext, progress: ProgressTracker) -> None:
    """Load and stage, then answer the engine, which runs evaluate before and fine-tune in its
    own order (a resumed attempt skips what is stored), then register what it handed back."""
    sandbox = sandbox_from_settings(context.settings)
    model_row = load_model_row(context)
    sandbox.check_may_run(model_row.format)
    with tempfile.TemporaryDirectory(
        prefix=f"robustify-{context.job.id}-", ignore_cleanup_errors=True
    ) as folder:
        job_dir = Path(folder)
        inputs = stage_inputs(context, job_dir, model_row, sandbox)
        with _start_engine(context, sandbox, job_dir, inputs) as engine:
            finished = converse(context, progress, engine)
            register_result(context, engine, finished, model_row=model_row, sandbox=sandbox)


def _start_engine(
    context: JobContext, sandbox: Sandbox, job_dir: Path, inputs: list[Path]
) -> EngineChannel:
    devices = gpu_devices() if _uses_gpu(context.settings) else []
    return EngineChannel.start(
        sandbox,
        job_dir,
        read_only=inputs,
        devices=devices,
        environment=_gpu_environment(devices),
        world_size=world_size_of(context.job.config),
    )


def _uses_gpu(settings: Settings) -> bool:
    device = settings.worker_device
    if device is not None:
        return device.startswith("cuda")
    return bool(gpu_devices())


def _gpu_environment(devices: list[str]) -> dict[str, str]:
    """The sandbox hides every GPU (CUDA_VISIBLE_DEVICES=""); a CUDA job sees the worker's."""
    if not devices:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        count = sum(1 for device in devices if device.removeprefix("/dev/nvidia").isdigit())
        visible = ",".join(str(index) for index in range(count))
    return {"CUDA_VISIBLE_DEVICES": visible}
