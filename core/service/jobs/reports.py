"""The evaluate-before phase, and the evaluation reports the engine writes: each one checked
before it is stored, the one before hardening stored with its `evaluated` event."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from core.service.engine.channel import EngineChannel, EngineFailure
from core.service.engine.protocol import Evaluated, Fraction
from core.service.errors import JobCode
from core.service.jobs.run_context import JobContext


class _ReportSummary(BaseModel):
    """What the parent relies on in an evaluation report the engine wrote."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    clean_accuracy: Fraction
    robust_accuracy: Fraction
    warnings: list[str]


def read_report(engine: EngineChannel, name: str) -> dict[str, Any]:
    """The evaluation report the engine wrote to `name`, once it is checked to be one."""
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


def store_before(context: JobContext, engine: EngineChannel, message: Evaluated) -> None:
    """Store the uploaded model's evaluation (made once: a resumed attempt keeps the first)."""
    if context.job.metrics.get("before") is not None:
        raise EngineFailure(
            JobCode.ENGINE_PROTOCOL_ERROR, "the job's engine evaluated the model a second time"
        )
    report = read_report(engine, message.report)
    context.update(
        metrics={**context.job.metrics, "before": report},
        event=("evaluated", "evaluated the uploaded model", _event_summary(report)),
    )


def _event_summary(report: dict[str, Any]) -> dict[str, Any]:
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
