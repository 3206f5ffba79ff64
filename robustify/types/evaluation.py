"""One model's evaluation (a job's metrics.before or metrics.after), with each accuracy's 95%
interval: the ones the service stored, or computed here for reports stored without them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from robustify.decoding import ApiObject

Interval = tuple[float, float]  # (low, high)
Z_95 = 1.959963984540054  # two-sided 95%
ACCURACY_NAMES = (
    "clean_accuracy",
    "robust_accuracy",
    "pgd_accuracy",
    "fgsm_accuracy",
    "autoattack_accuracy",
)


def wilson_interval(accuracy: float, samples: int, *, z: float = Z_95) -> Interval:
    """The Wilson score interval of `accuracy` measured on `samples` examples (centered at
    (p + z²/2n) / (1 + z²/n), not at p): what the service stores, computed for reports that
    older servers stored without it."""
    if samples <= 0:
        return 0.0, 1.0
    n, p = float(samples), min(max(float(accuracy), 0.0), 1.0)
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def _interval(value: Any) -> Interval | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        return float(value[0]), float(value[1])
    return None


@dataclass(frozen=True, kw_only=True)
class Stage(ApiObject):
    """One attack of the evaluation's ensemble, run on the examples every earlier one left."""

    name: str = ""  # PGD-20, APGD-CE, APGD-T, FAB-T, Square
    attacked: int | None  # examples it ran on
    robust_accuracy: float | None  # after it and every earlier one (cumulative)
    seconds: float | None


class _Intervals:
    """Each accuracy's interval: the stored one, else Wilson's on `samples` examples."""

    def __init__(self, stored: Mapping[str, Any], samples: Any) -> None:
        self.stored, self.samples = stored, samples

    def of(self, stored_value: Any, accuracy: Any) -> Interval | None:
        kept = _interval(stored_value)
        if kept is not None or not isinstance(accuracy, int | float) or not self.samples:
            return kept
        return wilson_interval(float(accuracy), int(self.samples))

    def by_name(self, data: Mapping[str, Any]) -> dict[str, Interval]:
        return {
            name: found
            for name in ACCURACY_NAMES
            if (found := self.of(self.stored.get(name), data.get(name))) is not None
        }

    def by_epsilon(self, by_epsilon: dict[float, float]) -> dict[float, Interval]:
        stored = {
            float(eps): value
            for eps, value in (self.stored.get("accuracy_by_epsilon") or {}).items()
        }
        return {
            eps: found
            for eps, accuracy in by_epsilon.items()
            if (found := self.of(stored.get(eps), accuracy)) is not None
        }


@dataclass(frozen=True, kw_only=True)
class Evaluation(ApiObject):
    """One model measured on the job's test subset (metrics.before or metrics.after).

    Reports stored by older servers lack `attack`, `pgd_accuracy`, `stages` and the intervals:
    `attack` and `pgd_accuracy` are None, `stages` empty, and the intervals are computed here
    from each accuracy and `num_samples` (the same Wilson intervals the service stores).
    """

    clean_accuracy: float
    # The headline: the per-example worst case over the preset's attacks (older servers: PGD)
    robust_accuracy: float
    attack: str | None  # the preset: fast, standard or autoattack (None: an older server's PGD)
    pgd_accuracy: float | None  # PGD-`attack_steps` alone, the ensemble's first attack
    fgsm_accuracy: float | None
    autoattack_accuracy: float | None
    accuracy_by_epsilon: dict[float, float]
    stages: list[Stage]
    confidence_level: float
    confidence_intervals: dict[str, Interval]  # accuracy name (clean_accuracy, ...) -> interval
    intervals_by_epsilon: dict[float, Interval]  # the intervals of accuracy_by_epsilon
    epsilon: float | None
    norm: str | None
    attack_steps: int | None
    restarts: int | None
    num_samples: int | None
    warnings: list[str]  # failed sanity checks: signs of gradient masking

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        threat = data.get("threat") or {}
        by_epsilon = {
            float(eps): float(acc) for eps, acc in (data.get("accuracy_by_epsilon") or {}).items()
        }
        intervals = _Intervals(data.get("confidence_intervals") or {}, data.get("num_samples"))
        return cls(
            clean_accuracy=float(data["clean_accuracy"]),
            robust_accuracy=float(data["robust_accuracy"]),
            attack=data.get("attack"),
            pgd_accuracy=data.get("pgd_accuracy"),
            fgsm_accuracy=data.get("fgsm_accuracy"),
            autoattack_accuracy=data.get("autoattack_accuracy"),
            accuracy_by_epsilon=by_epsilon,
            stages=[Stage.from_json(stage) for stage in data.get("stages") or []],
            confidence_level=float(data.get("confidence_level") or 0.95),
            confidence_intervals=intervals.by_name(data),
            intervals_by_epsilon=intervals.by_epsilon(by_epsilon),
            epsilon=threat.get("epsilon"),
            norm=threat.get("norm"),
            attack_steps=data.get("attack_steps"),
            restarts=data.get("restarts"),
            num_samples=data.get("num_samples"),
            warnings=list(data.get("warnings") or []),
        )
