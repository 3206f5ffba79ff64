"""Run one job: claim it, load its model and data, run the engine, store results and events.

Called by the worker's task with a job id; everything it needs comes from the database and the
artifact store, and everything it produces goes back there. A lease keeper thread renews the
job's lease while it runs and notices a cancel request, which the training loop obeys at its
next batch.
"""

from __future__ import annotations

import logging
import platform
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core import catalog, jobs
from core.config import Settings
from core.db import transaction
from core.errors import Conflict, DatasetError, InvalidConfig, ModelLoadError, TrainingDiverged
from core.ids import new_id
from core.jobconfig import (
    EvaluationSettings,
    evaluation_settings,
    finetune_config,
    threat_model,
)
from core.logs import job_context
from core.robust import (
    DatasetSplits,
    EpochMetrics,
    RobustModel,
    ThreatModel,
    adversarial_finetune,
    evaluate,
    load_checkpoint,
    load_dataset,
    load_model,
    save_checkpoint,
    save_model,
)
from core.robust.evaluation import EvalReport
from core.robust.measure import default_device
from core.robust.modelio import ModelFormat
from core.storage import ArtifactStore
from core.tables import Checkpoint, Dataset, Job, Model

log = logging.getLogger(__name__)


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
                ours, cancel = jobs.heartbeat(
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
    job = jobs.claim_job(
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


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


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
        self.device = (
            torch.device(settings.worker_device) if settings.worker_device else default_device()
        )
        self.last_progress_write = 0.0
        self.started = time.monotonic()

    # -- the job, top to bottom -------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except JobStopped:
            self._end_stopped()
        except TrainingDiverged as exc:
            self._fail("training_diverged", str(exc))
        except ModelLoadError as exc:
            self._fail("model_load_error", str(exc))
        except DatasetError as exc:
            self._fail("dataset_error", str(exc))
        except InvalidConfig as exc:
            self._fail("invalid_config", str(exc))
        except torch.cuda.OutOfMemoryError as exc:
            self._fail("out_of_memory", f"the GPU ran out of memory: {exc}; lower batch_size")
        except MemoryError:
            self._fail("out_of_memory", "the worker ran out of memory; lower batch_size")
        except Conflict:
            log.warning("job %s: lease lost to another worker; leaving it", self.job.id)
        except Exception as exc:  # the job fails with the reason; the worker lives on
            log.exception("job %s failed", self.job.id)
            self._fail("internal_error", f"{type(exc).__name__}: {exc}")

    def _run(self) -> None:
        config = self.job.config
        model, model_row = self._load_model()
        data = self._load_data(model_row)
        threat = threat_model(config)
        evaluation = evaluation_settings(config)
        before = self.job.metrics.get("before")
        if before is None:
            self._progress(phase="evaluating_before")
            report = self._evaluate(model, data, threat, evaluation)
            before = report.to_dict()
            self._update(
                metrics={**self.job.metrics, "before": before},
                event=("evaluated", "evaluated the uploaded model", _summary(report)),
            )
        self._stop_if_asked()
        if self.job.kind == "evaluate":
            self._succeed(
                metrics=self.job.metrics, result_model_id=None, model_row=model_row, data=data
            )
            return
        self._harden(model, model_row, data, threat, evaluation)

    def _harden(
        self,
        model: RobustModel,
        model_row: Model,
        data: DatasetSplits,
        threat: ThreatModel,
        evaluation: EvaluationSettings,
    ) -> None:
        config = finetune_config(self.job.config)
        resume = self._last_checkpoint()
        self._progress(phase="training", epoch=len(self._epochs()), epochs=config.epochs)
        result = adversarial_finetune(
            model,
            data.train,
            threat,
            config,
            val=data.test,
            resume=resume,
            device=self.device,
            on_epoch=lambda metrics, checkpoint: self._save_epoch(model, metrics, checkpoint),
            on_batch=lambda epoch, step, steps, loss: self._batch_progress(
                epoch, step, steps, loss, config.epochs
            ),
            should_stop=self.keeper.should_stop,
        )
        if result.stopped:
            raise JobStopped
        self._stop_if_asked()
        self._progress(phase="evaluating_after")
        hardened = result.model
        assert isinstance(hardened, RobustModel)
        after = self._evaluate(hardened, data, threat, evaluation)
        self._stop_if_asked()
        result_model = self._store_result_model(hardened, model_row)
        metrics = {
            **self.job.metrics,
            "after": after.to_dict(),
            "best_epoch": result.best_epoch,
            "epochs": [asdict(m) for m in result.history],
        }
        try:
            self._succeed(
                metrics=metrics,
                result_model_id=result_model.id,
                model_row=model_row,
                data=data,
                result_model=result_model,
            )
        except BaseException:
            # Not registered (the lease was lost, or the database failed): no orphan file.
            self.store.delete_prefix(catalog.model_prefix(result_model.id))
            raise

    def _stop_if_asked(self) -> None:
        # Training obeys a cancel at its next batch; the phases around it check in between.
        if self.keeper.should_stop():
            raise JobStopped

    # -- loading ----------------------------------------------------------------------------

    def _load_model(self) -> tuple[RobustModel, Model]:
        with self.factory() as session:
            row = session.get(Model, self.job.model_id) if self.job.model_id else None
        if row is None or not self.store.exists(row.storage_key):
            raise ModelLoadError(f"the job's model {self.job.model_id} no longer exists")
        model = load_model(
            self.store.path(row.storage_key),
            input_shape=(row.input_shape[0], row.input_shape[1], row.input_shape[2]),
            num_classes=row.num_classes,
            mean=row.mean,
            std=row.std,
            architecture=row.architecture,
            format=cast(ModelFormat, row.format),
        )
        return model, row

    def _load_data(self, model_row: Model) -> DatasetSplits:
        name = self.job.dataset
        if name.startswith("builtin:"):
            data = load_dataset(
                name,
                data_dir=self.settings.resolved_datasets_dir,
                allow_download=self.settings.allow_download,
            )
        else:
            with self.factory() as session:
                row = session.get(Dataset, name)
            if (
                row is None
                or row.owner_id != self.job.owner_id
                or not self.store.exists(row.storage_key)
            ):
                raise DatasetError(f"the job's dataset {name} no longer exists")
            data = load_dataset(self.store.path(row.storage_key))
        if data.input_shape != tuple(model_row.input_shape):
            raise DatasetError(
                f"the dataset's images are {list(data.input_shape)} but the model "
                f"expects {model_row.input_shape}"
            )
        if data.num_classes > model_row.num_classes:
            raise DatasetError(
                f"the dataset has {data.num_classes} classes but the model only "
                f"{model_row.num_classes}"
            )
        return data

    def _evaluate(
        self, model: RobustModel, data: DatasetSplits, threat: ThreatModel, evaluation: Any
    ) -> EvalReport:
        return evaluate(
            model,
            data.test,
            threat,
            attack_steps=evaluation.attack_steps,
            restarts=evaluation.restarts,
            epsilons=evaluation.epsilons,
            autoattack=evaluation.autoattack,
            max_samples=evaluation.max_samples,
            seed=self.job.config["seed"],
            device=self.device,
        )

    # -- per epoch: a resumable checkpoint, its row and event, exactly once ------------------

    def _epochs(self) -> list[Checkpoint]:
        with self.factory() as session:
            return list(
                session.scalars(
                    select(Checkpoint)
                    .where(Checkpoint.job_id == self.job.id)
                    .order_by(Checkpoint.epoch)
                )
            )

    def _last_checkpoint(self) -> dict[str, Any] | None:
        rows = self._epochs()
        if not rows:
            return None
        with self.store.path(rows[-1].storage_key).open("rb") as handle:
            return load_checkpoint(handle)

    def _save_epoch(
        self, model: RobustModel, metrics: EpochMetrics, checkpoint: dict[str, Any]
    ) -> None:
        if self.keeper.lost:
            raise JobStopped
        # Each attempt writes its own files: a worker that lost its lease and has not noticed
        # yet never overwrites the files that the rows of the worker holding the job point to.
        folder_key = f"jobs/{self.job.id}/checkpoints/attempt-{self.job.attempts}"
        key = f"{folder_key}/epoch-{metrics.epoch:04d}.pt"
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / "checkpoint.pt"
            save_checkpoint(checkpoint, local)
            stored = self.store.put_file(key, local)
            # The epoch's weights, also as a model file in the upload's own format. The uploaded
            # model object is free to serve as the vessel: training works on its own copy.
            net_state = {
                name.removeprefix("net."): value
                for name, value in checkpoint["model"].items()
                if name.startswith("net.")
            }
            model.net.load_state_dict(net_state)
            weights = Path(folder) / "model"
            save_model(model, weights)
            self.store.put_file(catalog.weights_key_beside(key), weights)
        # The row and the event in one transaction: the unique (job, epoch) makes it once only.
        with transaction(self.factory) as session:
            jobs.owned_job(session, self.job.id, self.worker_id)
            session.add(
                Checkpoint(
                    id=new_id("ckpt"),
                    job_id=self.job.id,
                    epoch=metrics.epoch,
                    storage_key=key,
                    sha256=stored.sha256,
                    size_bytes=stored.size_bytes,
                    metrics=asdict(metrics),
                )
            )
            jobs.add_event(
                session,
                self.job.id,
                "epoch",
                f"epoch {metrics.epoch}: loss {metrics.train_loss:.4f}, "
                f"val robust accuracy {metrics.val_robust_accuracy}",
                asdict(metrics),
            )
        if self.keeper.lost:
            raise JobStopped

    # -- progress and results ---------------------------------------------------------------

    def _batch_progress(self, epoch: int, step: int, steps: int, loss: float, epochs: int) -> None:
        now = time.monotonic()
        if now - self.last_progress_write < 1.0 and step != steps:
            return
        self.last_progress_write = now
        done = ((epoch - 1) * steps + step) / (epochs * steps)
        elapsed = now - self.started
        self._progress(
            phase="training",
            epoch=epoch,
            epochs=epochs,
            step=step,
            steps_per_epoch=steps,
            fraction=round(done, 4),
            loss=loss,
            eta_seconds=round(elapsed / done * (1 - done), 1) if done > 0 else None,
        )

    def _progress(self, **progress: Any) -> None:
        self._update(progress=progress)

    def _update(
        self, *, event: tuple[str, str, dict[str, Any]] | None = None, **fields: Any
    ) -> None:
        with transaction(self.factory) as session:
            job = jobs.owned_job(session, self.job.id, self.worker_id)
            for name, value in fields.items():
                setattr(job, name, value)
            if event is not None:
                jobs.add_event(session, job.id, *event)
        for name, value in fields.items():
            setattr(self.job, name, value)

    def _store_result_model(self, hardened: RobustModel, source: Model) -> Model:
        """Write the hardened model's file; its row is added when the job succeeds."""
        model_id = new_id("mdl")
        key = catalog.model_key(model_id)
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / "model"
            save_model(hardened, local)
            stored = self.store.put_file(key, local)
        row = Model(
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
        return row

    def _succeed(
        self,
        *,
        metrics: dict[str, Any],
        result_model_id: str | None,
        model_row: Model,
        data: DatasetSplits,
        result_model: Model | None = None,
    ) -> None:
        manifest = _manifest(self.job, model_row, data, result_model, self.device)
        jobs.finish_job(
            self.factory,
            self.job.id,
            worker_id=self.worker_id,
            status=jobs.SUCCEEDED,
            metrics=metrics,
            result_model_id=result_model_id,
            manifest=manifest,
            progress={**self.job.progress, "phase": "done", "fraction": 1.0, "eta_seconds": 0},
            new_rows=[result_model] if result_model is not None else [],
        )

    def _end_stopped(self) -> None:
        if self.keeper.lost:
            log.warning("job %s: lease lost; another worker has it", self.job.id)
            return
        jobs.finish_job(
            self.factory,
            self.job.id,
            worker_id=self.worker_id,
            status=jobs.CANCELLED,
            error=_error(
                "cancelled",
                "cancelled while running; the checkpoints of finished epochs stay downloadable",
            ),
        )

    def _fail(self, code: str, message: str) -> None:
        try:
            jobs.finish_job(
                self.factory,
                self.job.id,
                worker_id=self.worker_id,
                status=jobs.FAILED,
                error=_error(code, message),
            )
        except Conflict:
            log.warning("job %s: could not record failure, lease lost", self.job.id)


def _summary(report: EvalReport) -> dict[str, Any]:
    return {
        "clean_accuracy": report.clean_accuracy,
        "robust_accuracy": report.robust_accuracy,
        "warnings": report.warnings,
    }


def _manifest(
    job: Job,
    model_row: Model,
    data: DatasetSplits,
    result_model: Model | None,
    device: torch.device,
) -> dict[str, Any]:
    """What it takes to reproduce the job: seed, versions, device, config, inputs and outputs."""
    import numpy
    import torchvision

    return {
        "job_id": job.id,
        "seed": job.config["seed"],
        "config": job.config,
        "dataset": {
            "name": job.dataset,
            "train_size": len(data.train),
            "test_size": len(data.test),
        },
        "input_model": {"id": model_row.id, "sha256": model_row.sha256, "format": model_row.format},
        "output_model": None
        if result_model is None
        else {"id": result_model.id, "sha256": result_model.sha256},
        "evaluation_subset": job.metrics.get("before", {}).get("subset_indices"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": numpy.__version__,
        },
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
        },
        "attempts": job.attempts,
    }
