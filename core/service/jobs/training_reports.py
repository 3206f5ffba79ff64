"""What the fine-tune phase reports besides its epochs: the learning-rate probe, the guards'
decisions and the weight interpolation, each stored in the job's metrics with its event."""

from __future__ import annotations

from core.service.engine.protocol import GuardReport, InterpolationReport, ProbeReport
from core.service.jobs.run_context import JobContext


def store_probe(context: JobContext, message: ProbeReport) -> None:
    probe = message.model_dump(exclude={"type"})
    rates = ", ".join(f"{trial.lr:.3g}" for trial in message.trials)
    context.update(
        metrics={**context.job.metrics, "lr_probe": probe},
        event=(
            "lr_probe",
            f"learning-rate probe: peak_lr {message.chosen_lr:.3g} of {rates or 'none'} "
            f"({message.reason}); it cost {message.gradient_passes} batch passes, "
            f"{message.budget_fraction:.0%} of the training's, in {message.seconds:.1f} s",
            probe,
        ),
    )


def store_guard(context: JobContext, message: GuardReport) -> None:
    metrics = context.job.metrics
    decision = message.model_dump(exclude={"type"})
    # A resumed attempt takes again the decisions made after its checkpoint: kept once.
    seen = {(d["epoch"], d["step"], d["reason"]) for d in metrics.get("guards", [])}
    if (message.epoch, message.step, message.reason) in seen:
        return
    context.update(
        metrics={**metrics, "guards": [*metrics.get("guards", []), decision]},
        event=("guard", f"guard: {message.message}", decision),
    )


def store_interpolation(context: JobContext, message: InterpolationReport) -> None:
    interpolation = message.model_dump(exclude={"type"})
    # A resumed attempt searches the same line again after its last checkpoint: kept once.
    # (A search that found otherwise describes the model this attempt hands back: stored.)
    if context.job.metrics.get("interpolation") == interpolation:
        return
    context.update(
        metrics={**context.job.metrics, "interpolation": interpolation},
        event=("interpolation", f"interpolation: {message.message}", interpolation),
    )
