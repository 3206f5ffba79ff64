"""An evaluation report's accuracies with their 95% intervals: the ones it stores, or
(reports of older jobs) the Wilson intervals computed here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from api.report.formatting import is_float, is_number, with_interval
from core.service.jobs.verdict import wilson_interval


def measured(report: Mapping[str, Any] | None, key: str) -> str:
    """An accuracy of `report` with its 95% interval, as HTML."""
    return with_interval((report or {}).get(key), confidence_interval(report, key))


def confidence_interval(report: Mapping[str, Any] | None, key: str) -> tuple[float, float] | None:
    """`key`'s 95% interval: the one the report stores, else the Wilson interval of its
    accuracy on num_samples (reports stored before intervals were); None without either."""
    if not report:
        return None
    stored = report.get("confidence_intervals")
    kept = _stored_bounds(stored.get(key)) if isinstance(stored, Mapping) else None
    return kept or _wilson_bounds(report.get(key), report.get("num_samples"))


def epsilon_intervals(report: Mapping[str, Any]) -> dict[float, tuple[float, float]]:
    """Each epsilon's 95% interval, stored or computed, for the epsilons of `epsilon_curve`."""
    stored = report.get("confidence_intervals")
    by_epsilon = stored.get("accuracy_by_epsilon") if isinstance(stored, Mapping) else None
    kept: dict[float, tuple[float, float]] = {}
    for eps, value in (by_epsilon if isinstance(by_epsilon, Mapping) else {}).items():
        bounds = _stored_bounds(value)
        if bounds is not None and is_float(eps):
            kept[float(eps)] = bounds
    samples = report.get("num_samples")
    return {
        eps: found
        for eps, accuracy in epsilon_curve(report).items()
        if (found := kept.get(eps) or _wilson_bounds(accuracy, samples)) is not None
    }


def epsilon_curve(report: Mapping[str, Any]) -> dict[float, float]:
    """The report's accuracy by epsilon with float keys (JSON stored them as strings)."""
    curve = {}
    for eps, acc in (report.get("accuracy_by_epsilon") or {}).items():
        try:
            curve[float(eps)] = float(acc)
        except (TypeError, ValueError):
            continue
    return curve


def _stored_bounds(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(is_number, value)):
        return float(value[0]), float(value[1])
    return None


def _wilson_bounds(accuracy: Any, samples: Any) -> tuple[float, float] | None:
    if not is_number(accuracy) or not is_number(samples) or samples <= 0:
        return None
    return wilson_interval(float(accuracy), int(samples))
