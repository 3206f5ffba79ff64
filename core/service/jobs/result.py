"""The register phase: the evaluation after hardening and the choices that led to the model
handed back, the hardened model's file, and the job's end as succeeded, the model's row and
the manifest with it, in one transaction."""

from __future__ import annotations

from typing import Any

from core.service import catalog
from core.service.engine.channel import EngineChannel, EngineFailure
from core.service.engine.protocol import Finished
from core.service.errors import JobCode
from core.service.ids import new_id
from core.service.jobs import lifecycle
from core.service.jobs.epochs import checkpoint_rows
from core.service.jobs.lease import JobStopped
from core.service.jobs.manifest import build_manifest
from core.service.jobs.reports import read_report
from core.service.jobs.run_context import JobContext
from core.service.jobs.staging import model_description
from core.service.jobs.verdict import DEFAULT_MAX_CLEAN_DROP, harden_verdict
from core.service.sandbox.runner import Sandbox
from core.service.tables import Model


def register_result(
    context: JobContext,
    engine: EngineChannel,
    finished: Finished,
    *,
    model_row: Model,
    sandbox: Sandbox,
) -> None:
    """End the job as succeeded with its metrics, manifest and (hardening) its new model."""
    if context.keeper.should_stop() or context.cancel_requested():
        raise JobStopped
    job = context.job
    metrics = dict(job.metrics)
    if "before" not in metrics:
        raise EngineFailure(
            JobCode.ENGINE_PROTOCOL_ERROR,
            "the job's engine finished without evaluating the model",
        )
    result_model = None
    if job.kind == "harden":
        model_file, after_file = _hardened_outputs(context, finished)
        metrics.update(_hardening_metrics(context, engine, finished, after_file=after_file))
        result_model = _store_result_model(context, engine, model_file, model_row)
    manifest = build_manifest(
        job, model_row=model_row, finished=finished, result_model=result_model, sandbox=sandbox
    )
    try:
        context.finish(
            status=lifecycle.SUCCEEDED,
            metrics=metrics,
            result_model_id=result_model.id if result_model is not None else None,
            manifest=manifest,
            progress={**job.progress, "phase": "done", "fraction": 1.0, "eta_seconds": 0},
            new_rows=[result_model] if result_model is not None else [],
        )
    except BaseException:
        # Not registered (the lease was lost, or the database failed): no orphan file.
        if result_model is not None:
            context.store.delete_prefix(catalog.model_prefix(result_model.id))
        raise


def _hardened_outputs(context: JobContext, finished: Finished) -> tuple[str, str]:
    """The hardened model's file and its report's, once the engine is seen to have trained
    every epoch (or stopped early) and chosen one of them."""
    done, planned = context.epochs_done, context.epochs
    if (
        finished.model is None
        or finished.after is None
        or finished.best_epoch is None
        or not (done == planned or finished.stopped_early)
        or finished.best_epoch > done
    ):
        raise EngineFailure(
            JobCode.ENGINE_PROTOCOL_ERROR,
            f"the job's engine finished after {done} of {planned} epochs "
            "without a model, its report or its best epoch",
        )
    return finished.model, finished.after


def _hardening_metrics(
    context: JobContext, engine: EngineChannel, finished: Finished, *, after_file: str
) -> dict[str, Any]:
    """What hardening adds to the job's metrics: the evaluation after, the epoch handed back
    and why, the rate, optimizer, augmentation and precision trained with, every epoch's
    metrics and the verdict."""
    metrics: dict[str, Any] = {
        "after": read_report(engine, after_file),
        "best_epoch": finished.best_epoch,
        "peak_lr": finished.peak_lr,
        "optimizer": finished.optimizer,
        "augmentation": finished.augmentation,
        "precision": finished.precision,
        "stopped_early": finished.stopped_early,
    }
    if finished.dataset.validation is None:
        raise EngineFailure(
            JobCode.ENGINE_PROTOCOL_ERROR,
            "the job's engine finished training without naming its validation split",
        )
    metrics["validation"] = finished.dataset.validation.model_dump(include={"source", "size"})
    metrics["epochs"] = [row.metrics for row in checkpoint_rows(context)]
    metrics["best_epoch_choice"] = _best_epoch_choice(context, finished)
    metrics["verdict"] = harden_verdict(
        context.job.metrics["before"],
        metrics["after"],
        max_clean_drop=_max_clean_drop(context),
    )
    return metrics


def _max_clean_drop(context: JobContext) -> float:
    """The job's max_clean_drop; a config stored before it existed: the engine's default."""
    value = context.job.config["hyperparameters"].get("max_clean_drop")
    return DEFAULT_MAX_CLEAN_DROP if value is None else float(value)


def _best_epoch_choice(context: JobContext, finished: Finished) -> dict[str, Any]:
    """How the best epoch was chosen; an event says so when no epoch kept clean accuracy."""
    max_clean_drop = _max_clean_drop(context)
    choice = {
        "reference_clean_accuracy": finished.reference_clean_accuracy,
        "max_clean_drop": max_clean_drop,
        "meets_clean_constraint": finished.best_meets_clean_constraint,
    }
    if finished.best_meets_clean_constraint is False:
        context.update(
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


def _store_result_model(
    context: JobContext, engine: EngineChannel, name: str, source: Model
) -> Model:
    """Store the hardened model's file; its row is added when the job succeeds."""
    model_id = new_id("mdl")
    key = catalog.model_key(model_id)
    with engine.output(name, max_bytes=context.settings.max_model_bytes) as handle:
        stored = context.store.put_stream(key, handle.chunks())
    return Model(
        id=model_id,
        owner_id=source.owner_id,
        name=f"{source.name}-robust",
        **model_description(source),
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        storage_key=key,
        source_job_id=context.job.id,
        warnings=[],
    )
