"""Run one job: claim it, stage its inputs in a job folder, run the engine there in the sandbox,
and store what it hands back (checkpoints, reports, the hardened model) and its events.

This is the trusted side: it holds the database and the artifact store, and never runs the
user's model. The model runs in core.service.engine.process, a sandboxed child with nothing but the
job folder, which asks before every batch whether to go on; the answer comes from the job's cancel
flag and from the lease, which a lease keeper thread renews.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.service import catalog
from core.service.config import Settings
from core.service.db import transaction
from core.service.engine.channel import EngineChannel, EngineFailure
from core.service.engine.protocol import (
    MODEL_FILE,
    REQUEST_FILE,
    RESUME_FILE,
    BatchDone,
    EpochDone,
    Evaluated,
    Failed,
    Finished,
    Fraction,
    GuardReport,
    InterpolationReport,
    PhaseStarted,
    ProbeBatch,
    ProbeReport,
    Stopped,
)
from core.service.errors import (
    Conflict,
    DatasetError,
    JobCode,
    ModelLoadError,
    StorageFull,
    error_body,
    error_code,
)
from core.service.ids import new_id
from core.service.jobs import lifecycle
from core.service.jobs.verdict import DEFAULT_MAX_CLEAN_DROP, harden_verdict
from core.service.logs import job_context
from core.service.sandbox.runner import Sandbox, gpu_devices, sandbox_from_settings
from core.service.storage import ArtifactStore
from core.service.tables import Checkpoint, Dataset, Job, Model

log = logging.getLogger(__name__)

# How long the parent waits for a message before it looks at the lease and the progress.
POLL_SECONDS = 0.5
# Progress is written at most this often (and at the latest this long after a batch).
PROGRESS_SECONDS = 1.0
# Files a job's engine hands back: a checkpoint holds the weights, the optimizer's momentum and
# the best epoch's weights, so a few times the model.
CHECKPOINT_SIZE_FACTOR = 4
CHECKPOINT_SLACK_BYTES = 64 * 1024**2


# Built from scikit-learn's bundled digits, which lie inside the sandbox's read-only Python
# folders: nothing to stage.
BUNDLED_DATASETS = frozenset({"builtin:digits", "builtin:digits32"})


class JobStopped(Exception):
    """The job was cancelled, or this worker lost its lease: stop without a result."""


class LeaseKeeper(threading.Thread):
    """Renews the job's lease every heartbeat and notices cancel requests, off the hot loop."""

    def __init__(
        self, factory: sessionmaker[Session], job_id: str, *, worker_id: str, settings: Settings
    ) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.factory, self.job_id, self.worker_id, self.settings = (
            factory,
            job_id,
            worker_id,
            settings,
        )
        self.done = threading.Event()
        self.cancel_requested = False
        self.lost = False

    def run(self) -> None:
        with job_context(self.job_id):
            self._beat_until_done()

    def _beat_until_done(self) -> None:
        while not self.done.wait(self.settings.heartbeat_seconds):
            try:
                ours, cancel = lifecycle.heartbeat(
                    self.factory,
                    self.job_id,
                    worker_id=self.worker_id,
                    lease_seconds=self.settings.lease_seconds,
                )
            except Exception:  # a database blip must not kill the job; the next beat retries
                log.exception("job %s: heartbeat failed", self.job_id)
                continue
            self.cancel_requested |= cancel
            self.lost |= not ours

    def should_stop(self) -> bool:
        return self.cancel_requested or self.lost


def run_job(
    job_id: str,
    *,
    settings: Settings,
    factory: sessionmaker[Session],
    store: ArtifactStore,
    worker_id: str,
) -> None:
    """Claim and run `job_id` to its end (or do nothing if another worker holds it)."""
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
    keeper = LeaseKeeper(factory, job_id, worker_id=worker_id, settings=settings)
    keeper.start()
    try:
        _JobRun(
            job, settings=settings, factory=factory, store=store, worker_id=worker_id, keeper=keeper
        ).run()
    finally:
        keeper.done.set()
        keeper.join()


class _ReportSummary(BaseModel):
    """What the parent relies on in an evaluation report the engine wrote."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    clean_accuracy: Fraction
    robust_accuracy: Fraction
    warnings: list[str]


class _JobRun:
    def __init__(
        self,
        job: Job,
        *,
        settings: Settings,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        worker_id: str,
        keeper: LeaseKeeper,
    ) -> None:
        self.job, self.settings, self.factory, self.store = job, settings, factory, store
        self.worker_id, self.keeper = worker_id, keeper
        self.epochs = int(job.config.get("hyperparameters", {}).get("epochs") or 0)
        self.epochs_done = 0
        self.probe_share = 0.0  # of the progress bar, set by the probe's first batch
        self.pending_progress: dict[str, Any] | None = None
        self.last_progress_write = 0.0
        self.started = time.monotonic()

    # -- the job, top to bottom -------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except JobStopped:
            self._end_stopped()
        except EngineFailure as exc:
            self._fail(exc.code, exc.message)
        except (ModelLoadError, DatasetError, StorageFull) as exc:
            self._fail(error_code(exc), str(exc))
        except Conflict:
            log.warning("job %s: lease lost to another worker; leaving it", self.job.id)
        except Exception as exc:  # the job fails with the reason; the worker lives on
            log.exception("job %s failed", self.job.id)
            self._fail(JobCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        sandbox = sandbox_from_settings(self.settings)
        model_row = self._model_row()
        sandbox.check_may_run(model_row.format)
        with tempfile.TemporaryDirectory(
            prefix=f"robustify-{self.job.id}-", ignore_cleanup_errors=True
        ) as folder:
            job_dir = Path(folder)
            inputs = self._stage(job_dir, model_row, sandbox)
            devices = gpu_devices() if self._uses_gpu() else []
            with EngineChannel.start(
                sandbox,
                job_dir,
                read_only=inputs,
                devices=devices,
                environment=_gpu_environment(devices),
            ) as engine:
                finished = self._converse(engine)
                self._end_finished(engine, finished, model_row, sandbox)

    def _converse(self, engine: EngineChannel) -> Finished:
        """Answer the engine until it ends; its questions are answered in the order asked."""
        while True:
            message = engine.receive(POLL_SECONDS)
            self._flush_progress()
            if message is None:
                # A long phase (an evaluation) stops at once on a cancel or a lost lease.
                if self.keeper.should_stop():
                    raise JobStopped
                continue
            if isinstance(message, PhaseStarted):
                self._phase(message)
            elif isinstance(message, Evaluated):
                self._store_before(engine, message)
            elif isinstance(message, BatchDone):
                self._batch_progress(message)
            elif isinstance(message, ProbeBatch):
                self._probe_progress(message)
            elif isinstance(message, ProbeReport):
                self._store_probe(message)
            elif isinstance(message, GuardReport):
                self._store_guard(message)
            elif isinstance(message, InterpolationReport):
                self._store_interpolation(message)
            elif isinstance(message, EpochDone):
                self._save_epoch(engine, message)
            elif isinstance(message, Finished):
                return message
            elif isinstance(message, Stopped):
                raise JobStopped
            elif isinstance(message, Failed):
                raise EngineFailure(message.code, message.message)
            self._answer(engine)

    def _answer(self, engine: EngineChannel) -> None:
        # A cancel recorded before this read is obeyed before the engine's next batch: the
        # flag is read for every question, not at the next heartbeat.
        go = not self.keeper.lost and not self._cancel_requested()
        engine.reply(go=go)
        if not go:
            raise JobStopped

    def _cancel_requested(self) -> bool:
        try:
            return lifecycle.cancel_requested(self.factory, self.job.id)
        except SQLAlchemyError:  # a database blip must not fail the job: the heartbeat's look
            log.warning("job %s: could not read the cancel flag", self.job.id, exc_info=True)
            return self.keeper.cancel_requested

    def _uses_gpu(self) -> bool:
        device = self.settings.worker_device
        if device is not None:
            return device.startswith("cuda")
        return bool(gpu_devices())

    # -- the job folder ---------------------------------------------------------------------

    def _model_row(self) -> Model:
        with self.factory() as session:
            row = session.get(Model, self.job.model_id) if self.job.model_id else None
        if row is None or not self.store.exists(row.storage_key):
            raise ModelLoadError(f"the job's model {self.job.model_id} no longer exists")
        return row

    def _stage(self, job_dir: Path, model_row: Model, sandbox: Sandbox) -> list[Path]:
        """Copy the job's inputs into its folder and write the request; returns the inputs,
        which the sandbox shows read-only. Nothing else of the worker's is visible there."""
        inputs = [job_dir / REQUEST_FILE, job_dir / MODEL_FILE]
        self.store.copy_to(model_row.storage_key, job_dir / MODEL_FILE)
        dataset = self._stage_dataset(job_dir, sandbox)
        if dataset["file"] is not None:
            inputs.append(job_dir / dataset["file"])
        rows = self._checkpoint_rows()
        self.epochs_done = len(rows)
        if rows:
            self.store.copy_to(rows[-1].storage_key, job_dir / RESUME_FILE)
            inputs.append(job_dir / RESUME_FILE)
        request = {
            "job_id": self.job.id,
            "kind": self.job.kind,
            "config": self.job.config,
            "model": {
                "format": model_row.format,
                "architecture": model_row.architecture,
                "input_shape": model_row.input_shape,
                "num_classes": model_row.num_classes,
                "mean": model_row.mean,
                "std": model_row.std,
            },
            "dataset": dataset,
            "resume": bool(rows),
            "has_before": self.job.metrics.get("before") is not None,
            "device": self.settings.worker_device,
            # Every run of a job uses the same count: a resumed run ends bit-identical only so.
            "threads": self.settings.torch_threads or len(os.sched_getaffinity(0)),
            "memory_bytes": self.settings.job_memory_bytes,
        }
        (job_dir / REQUEST_FILE).write_text(json.dumps(request))
        return inputs

    def _stage_dataset(self, job_dir: Path, sandbox: Sandbox) -> dict[str, Any]:
        name = self.job.dataset
        if name in BUNDLED_DATASETS:
            return {"name": name, "file": None, "data_dir": None, "allow_download": False}
        if name.startswith("builtin:"):
            if sandbox.isolated:
                # The sandbox shows only the job folder; a torchvision set is too large to copy
                # for every attempt, and the sandbox binds nothing outside the folder.
                raise DatasetError(
                    f"{name} is read from the worker's datasets folder, which this worker's "
                    "sandbox does not reach; upload the data as a dataset (.npz or an "
                    "ImageFolder archive) and use its ds_ id"
                )
            return {
                "name": name,
                "file": None,
                "data_dir": str(self.settings.resolved_datasets_dir),
                "allow_download": self.settings.allow_download,
            }
        with self.factory() as session:
            row = session.get(Dataset, name)
        if (
            row is None
            or row.owner_id != self.job.owner_id
            or not self.store.exists(row.storage_key)
        ):
            raise DatasetError(f"the job's dataset {name} no longer exists")
        # The stored name keeps the upload's suffix (.npz, .tar.gz), which says how to read it.
        file_name = row.storage_key.rsplit("/", 1)[-1]
        self.store.copy_to(row.storage_key, job_dir / file_name)
        return {"name": name, "file": file_name, "data_dir": None, "allow_download": False}

    # -- what the engine hands back ---------------------------------------------------------

    def _phase(self, message: PhaseStarted) -> None:
        if message.phase == "training":
            self._progress(phase="training", epoch=self.epochs_done, epochs=self.epochs)
        else:
            self._progress(phase=message.phase)

    def _store_before(self, engine: EngineChannel, message: Evaluated) -> None:
        if self.job.metrics.get("before") is not None:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR, "the job's engine evaluated the model a second time"
            )
        report = self._report(engine, message.report)
        self._update(
            metrics={**self.job.metrics, "before": report},
            event=("evaluated", "evaluated the uploaded model", _summary(report)),
        )

    def _store_probe(self, message: ProbeReport) -> None:
        probe = message.model_dump(exclude={"type"})
        rates = ", ".join(f"{trial.lr:.3g}" for trial in message.trials)
        self._update(
            metrics={**self.job.metrics, "lr_probe": probe},
            event=(
                "lr_probe",
                f"learning-rate probe: peak_lr {message.chosen_lr:.3g} of {rates or 'none'} "
                f"({message.reason}); it cost {message.gradient_passes} batch passes, "
                f"{message.budget_fraction:.0%} of the training's, in {message.seconds:.1f} s",
                probe,
            ),
        )

    def _store_guard(self, message: GuardReport) -> None:
        decision = message.model_dump(exclude={"type"})
        # A resumed attempt takes again the decisions made after its checkpoint: kept once.
        seen = {(d["epoch"], d["step"], d["reason"]) for d in self.job.metrics.get("guards", [])}
        if (message.epoch, message.step, message.reason) in seen:
            return
        self._update(
            metrics={**self.job.metrics, "guards": [*self.job.metrics.get("guards", []), decision]},
            event=("guard", f"guard: {message.message}", decision),
        )

    def _store_interpolation(self, message: InterpolationReport) -> None:
        interpolation = message.model_dump(exclude={"type"})
        # A resumed attempt searches the same line again after its last checkpoint: kept once.
        # (A search that found otherwise describes the model this attempt hands back: stored.)
        if self.job.metrics.get("interpolation") == interpolation:
            return
        self._update(
            metrics={**self.job.metrics, "interpolation": interpolation},
            event=("interpolation", f"interpolation: {message.message}", interpolation),
        )

    def _report(self, engine: EngineChannel, name: str) -> dict[str, Any]:
        report = engine.read_json(name)
        try:
            _ReportSummary.model_validate(report)
        except ValidationError as exc:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR,
                f"the job's engine wrote an evaluation report that is not one: {exc}"[:2000],
            ) from exc
        assert isinstance(report, dict)
        return report

    def _save_epoch(self, engine: EngineChannel, message: EpochDone) -> None:
        """Store the epoch's two files, then its row, event and metrics in one transaction,
        before the engine (waiting for the answer) goes on: exactly once per epoch."""
        if self.keeper.lost:
            raise JobStopped
        metrics = message.metrics
        if metrics.epoch != self.epochs_done + 1 or metrics.epoch > self.epochs:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR,
                f"the job's engine reported epoch {metrics.epoch} after epoch {self.epochs_done}",
            )
        # Each attempt writes its own files: a worker that lost its lease and has not noticed
        # yet never overwrites the files that the rows of the worker holding the job point to.
        key = (
            f"jobs/{self.job.id}/checkpoints/attempt-{self.job.attempts}/"
            f"epoch-{metrics.epoch:04d}.pt"
        )
        model_bytes = self.settings.max_model_bytes
        checkpoint_bytes = CHECKPOINT_SIZE_FACTOR * model_bytes + CHECKPOINT_SLACK_BYTES
        with engine.output(message.checkpoint, max_bytes=checkpoint_bytes) as handle:
            stored = self.store.put_stream(key, handle.chunks())
        with engine.output(message.weights, max_bytes=model_bytes) as handle:
            self.store.put_stream(catalog.weights_key_beside(key), handle.chunks())
        engine.remove(message.checkpoint)
        engine.remove(message.weights)
        values = metrics.model_dump()
        self.job.metrics = lifecycle.record_epoch(
            self.factory,
            self.job.id,
            worker_id=self.worker_id,
            checkpoint=Checkpoint(
                id=new_id("ckpt"),
                job_id=self.job.id,
                epoch=metrics.epoch,
                storage_key=key,
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                metrics=values,
            ),
            message=f"epoch {metrics.epoch}: loss {metrics.train_loss:.4f}, "
            f"val robust accuracy {metrics.val_robust_accuracy}",
        )
        self.epochs_done = metrics.epoch
        if self.keeper.lost:
            raise JobStopped

    def _checkpoint_rows(self) -> list[Checkpoint]:
        with self.factory() as session:
            return list(
                session.scalars(
                    select(Checkpoint)
                    .where(Checkpoint.job_id == self.job.id)
                    .order_by(Checkpoint.epoch)
                )
            )

    def _end_finished(
        self, engine: EngineChannel, finished: Finished, model_row: Model, sandbox: Sandbox
    ) -> None:
        if self.keeper.should_stop() or self._cancel_requested():
            raise JobStopped
        metrics = dict(self.job.metrics)
        if "before" not in metrics:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR,
                "the job's engine finished without evaluating the model",
            )
        result_model = None
        if self.job.kind == "harden":
            if (
                finished.model is None
                or finished.after is None
                or finished.best_epoch is None
                or not (self.epochs_done == self.epochs or finished.stopped_early)
                or finished.best_epoch > self.epochs_done
            ):
                raise EngineFailure(
                    JobCode.ENGINE_PROTOCOL_ERROR,
                    f"the job's engine finished after {self.epochs_done} of {self.epochs} epochs "
                    "without a model, its report or its best epoch",
                )
            metrics["after"] = self._report(engine, finished.after)
            metrics["best_epoch"] = finished.best_epoch
            metrics["peak_lr"] = finished.peak_lr
            metrics["optimizer"] = finished.optimizer
            metrics["stopped_early"] = finished.stopped_early
            if finished.dataset.validation is None:
                raise EngineFailure(
                    JobCode.ENGINE_PROTOCOL_ERROR,
                    "the job's engine finished training without naming its validation split",
                )
            metrics["validation"] = finished.dataset.validation.model_dump(
                include={"source", "size"}
            )
            metrics["epochs"] = [row.metrics for row in self._checkpoint_rows()]
            metrics["best_epoch_choice"] = self._best_epoch_choice(finished)
            metrics["verdict"] = harden_verdict(
                metrics["before"],
                metrics["after"],
                max_clean_drop=self._max_clean_drop(),
            )
            result_model = self._store_result_model(engine, finished.model, model_row)
        manifest = _manifest(self.job, model_row, finished, result_model, sandbox)
        try:
            lifecycle.finish_job(
                self.factory,
                self.job.id,
                worker_id=self.worker_id,
                status=lifecycle.SUCCEEDED,
                metrics=metrics,
                result_model_id=result_model.id if result_model is not None else None,
                manifest=manifest,
                progress={**self.job.progress, "phase": "done", "fraction": 1.0, "eta_seconds": 0},
                new_rows=[result_model] if result_model is not None else [],
            )
        except BaseException:
            # Not registered (the lease was lost, or the database failed): no orphan file.
            if result_model is not None:
                self.store.delete_prefix(catalog.model_prefix(result_model.id))
            raise

    def _max_clean_drop(self) -> float:
        """The job's max_clean_drop; a config stored before it existed: the engine's default."""
        value = self.job.config["hyperparameters"].get("max_clean_drop")
        return DEFAULT_MAX_CLEAN_DROP if value is None else float(value)

    def _best_epoch_choice(self, finished: Finished) -> dict[str, Any]:
        """How the best epoch was chosen; an event says so when no epoch kept clean accuracy."""
        max_clean_drop = self._max_clean_drop()
        choice = {
            "reference_clean_accuracy": finished.reference_clean_accuracy,
            "max_clean_drop": max_clean_drop,
            "meets_clean_constraint": finished.best_meets_clean_constraint,
        }
        if finished.best_meets_clean_constraint is False:
            self._update(
                event=(
                    "warning",
                    f"no epoch kept validation clean accuracy within {max_clean_drop} of the "
                    f"uploaded model's ({finished.reference_clean_accuracy}); handing back "
                    f"epoch {finished.best_epoch}, the one with the highest validation robust "
                    "accuracy; the verdict tells whether test clean accuracy held (lower "
                    "peak_lr, or raise max_clean_drop)",
                    choice,
                )
            )
        return choice

    def _store_result_model(self, engine: EngineChannel, name: str, source: Model) -> Model:
        """Store the hardened model's file; its row is added when the job succeeds."""
        model_id = new_id("mdl")
        key = catalog.model_key(model_id)
        with engine.output(name, max_bytes=self.settings.max_model_bytes) as handle:
            stored = self.store.put_stream(key, handle.chunks())
        return Model(
            id=model_id,
            owner_id=source.owner_id,
            name=f"{source.name}-robust",
            format=source.format,
            architecture=source.architecture,
            input_shape=source.input_shape,
            num_classes=source.num_classes,
            mean=source.mean,
            std=source.std,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            storage_key=key,
            source_job_id=self.job.id,
            warnings=[],
        )

    # -- progress ---------------------------------------------------------------------------

    def _batch_progress(self, message: BatchDone) -> None:
        if message.epoch != self.epochs_done + 1 or message.step > message.steps:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR,
                f"the job's engine reported batch {message.step} of epoch {message.epoch} "
                f"after epoch {self.epochs_done}",
            )
        epochs, steps = max(self.epochs, 1), message.steps
        trained = ((message.epoch - 1) * steps + message.step) / (epochs * steps)
        # The probe (when there was one) had the first part of the bar: progress never goes back.
        done = self.probe_share + (1 - self.probe_share) * trained
        elapsed = time.monotonic() - self.started
        self.pending_progress = {
            "phase": "training",
            "epoch": message.epoch,
            "epochs": self.epochs,
            "step": message.step,
            "steps_per_epoch": steps,
            "fraction": round(min(done, 1.0), 4),
            "loss": message.loss,
            "eta_seconds": round(elapsed / done * (1 - done), 1) if done > 0 else None,
        }
        if message.step == steps:
            self._flush_progress(force=True)

    def _probe_progress(self, message: ProbeBatch) -> None:
        if self.epochs_done or message.candidate > message.candidates:
            raise EngineFailure(
                JobCode.ENGINE_PROTOCOL_ERROR,
                "the job's engine probed the learning rate mid-training",
            )
        probed = ((message.candidate - 1) * message.steps + message.step) / (
            message.candidates * message.steps
        )
        self.probe_share = message.job_share
        done = probed * message.job_share
        self.pending_progress = {
            "phase": "probing_lr",
            "candidate": message.candidate,
            "candidates": message.candidates,
            "step": message.step,
            "steps": message.steps,
            "fraction": round(min(done, 1.0), 4),
        }

    def _flush_progress(self, *, force: bool = False) -> None:
        """Write the latest batch's progress at most once a second, and at the latest a second
        after it came: what a reader sees is never older than that."""
        if self.pending_progress is None:
            return
        if not force and time.monotonic() - self.last_progress_write < PROGRESS_SECONDS:
            return
        progress, self.pending_progress = self.pending_progress, None
        self.last_progress_write = time.monotonic()
        self._progress(**progress)

    def _progress(self, **progress: Any) -> None:
        self._update(progress=progress)

    def _update(
        self, *, event: tuple[str, str, dict[str, Any]] | None = None, **fields: Any
    ) -> None:
        with transaction(self.factory) as session:
            job = lifecycle.owned_job(session, self.job.id, self.worker_id)
            for name, value in fields.items():
                setattr(job, name, value)
            if event is not None:
                lifecycle.add_event(session, job.id, *event)
        for name, value in fields.items():
            setattr(self.job, name, value)

    # -- endings without a result -------------------------------------------------------------

    def _end_stopped(self) -> None:
        if self.keeper.lost:
            log.warning("job %s: lease lost; another worker has it", self.job.id)
            return
        progress = {**self.job.progress, **(self.pending_progress or {})}
        try:
            lifecycle.finish_job(
                self.factory,
                self.job.id,
                worker_id=self.worker_id,
                status=lifecycle.CANCELLED,
                progress=progress,
                error=error_body(
                    JobCode.CANCELLED,
                    "cancelled while running; the checkpoints of finished epochs stay downloadable",
                ),
            )
        except Conflict:
            log.warning("job %s: could not record the cancel, lease lost", self.job.id)

    def _fail(self, code: str, message: str) -> None:
        log.warning("job %s failed: %s: %s", self.job.id, code, message)
        try:
            lifecycle.finish_job(
                self.factory,
                self.job.id,
                worker_id=self.worker_id,
                status=lifecycle.FAILED,
                error=error_body(code, message),
            )
        except Conflict:
            log.warning("job %s: could not record failure, lease lost", self.job.id)


def _gpu_environment(devices: list[str]) -> dict[str, str]:
    """The sandbox hides every GPU (CUDA_VISIBLE_DEVICES=""); a CUDA job sees the worker's."""
    if not devices:
        return {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        count = sum(1 for device in devices if device.removeprefix("/dev/nvidia").isdigit())
        visible = ",".join(str(index) for index in range(count))
    return {"CUDA_VISIBLE_DEVICES": visible}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """What an `evaluated` event says: the two headline accuracies, on how many images, with
    their 95% intervals (reports written before intervals existed have none)."""
    intervals = report.get("confidence_intervals") or {}
    return {
        "clean_accuracy": report["clean_accuracy"],
        "robust_accuracy": report["robust_accuracy"],
        "num_samples": report.get("num_samples"),
        "attack": report.get("attack"),
        "confidence_intervals": {
            name: intervals[name]
            for name in ("clean_accuracy", "robust_accuracy")
            if name in intervals
        },
        "warnings": report["warnings"],
    }


def _validation_manifest(finished: Finished) -> dict[str, Any] | None:
    """The split the best epoch was chosen on, and how it was drawn (a holdout's fraction and
    seed; an uploaded split has neither)."""
    validation = finished.dataset.validation
    return None if validation is None else validation.model_dump()


def _interpolation_manifest(job: Job) -> dict[str, Any] | None:
    interpolation = job.metrics.get("interpolation")
    if interpolation is None:
        return None
    return {"from_epoch": interpolation["from_epoch"], "fraction": interpolation["fraction"]}


def _manifest(
    job: Job,
    model_row: Model,
    finished: Finished,
    result_model: Model | None,
    sandbox: Sandbox,
) -> dict[str, Any]:
    """What it takes to reproduce the job: seed, versions, device, config, inputs and outputs."""
    environment = finished.environment
    return {
        "job_id": job.id,
        "seed": job.config["seed"],
        "config": job.config,
        "dataset": {
            "name": job.dataset,
            "train_size": finished.dataset.train_size,
            "test_size": finished.dataset.test_size,
            "validation": _validation_manifest(finished),
        },
        # The rate trained at, which a config with peak_lr null leaves to the probe: passing it
        # as peak_lr reproduces the run without probing.
        "peak_lr": finished.peak_lr,
        "optimizer": finished.optimizer,
        # The mix with the starting weights handed back when no epoch kept clean accuracy (a
        # fraction None: the best epoch's weights stayed); None: no search was made.
        "interpolation": _interpolation_manifest(job),
        "input_model": {"id": model_row.id, "sha256": model_row.sha256, "format": model_row.format},
        "output_model": None
        if result_model is None
        else {"id": result_model.id, "sha256": result_model.sha256},
        "evaluation_subset": job.metrics.get("before", {}).get("subset_indices"),
        "versions": {
            "python": environment.python,
            "torch": environment.torch,
            "torchvision": environment.torchvision,
            "numpy": environment.numpy,
        },
        "device": {
            "type": environment.device_type,
            "name": environment.device_name,
            "torch_threads": environment.torch_threads,
        },
        "worker": {"host": platform.node(), "sandbox": sandbox.kind},
        "attempts": job.attempts,
    }
