"""A harden job's verdict from its before/after test evaluations: `improved`, `clean_dropped` or
`not_improved`. Pure functions of the two reports (plain dicts), no torch: the trusted worker
parent computes it, and the CLI exits non-zero unless the model improved."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

Verdict = Literal["improved", "clean_dropped", "not_improved"]
VERDICTS: tuple[Verdict, ...] = ("improved", "clean_dropped", "not_improved")
# FinetuneConfig.max_clean_drop's default (core.robust cannot be imported here: it loads torch);
# tests/test_verdict.py checks that the two agree.
DEFAULT_MAX_CLEAN_DROP = 0.03
# Two-sided 95%.
Z_95 = 1.959963984540054


def wilson_half_width(accuracy: float, samples: int, *, z: float = Z_95) -> float:
    """Half the width of the Wilson score interval of `accuracy` measured on `samples`."""
    if samples <= 0:
        return math.inf
    n = float(samples)
    spread = math.sqrt(accuracy * (1.0 - accuracy) / n + z * z / (4.0 * n * n))
    return z * spread / (1.0 + z * z / n)


def harden_verdict(
    before: Mapping[str, Any], after: Mapping[str, Any], *, max_clean_drop: float
) -> Verdict:
    """`clean_dropped` when test clean accuracy fell by more than `max_clean_drop`; else
    `improved` when test robust accuracy rose by more than its noise; else `not_improved`.

    The noise test: the rise must exceed the two 95% Wilson intervals' half-widths combined
    (before's and after's, each on its own sample count). That is conservative: the two are
    measured on the same test subset (a paired test would be sharper), but per-example results
    are not kept in the reports, and a verdict of `improved` should never be a coin flip.
    """
    clean_drop = float(before["clean_accuracy"]) - float(after["clean_accuracy"])
    # The tolerance keeps a drop of exactly max_clean_drop inside despite float rounding.
    if clean_drop > max_clean_drop + 1e-9:
        return "clean_dropped"
    robust_before, robust_after = float(before["robust_accuracy"]), float(after["robust_accuracy"])
    noise = wilson_half_width(robust_before, int(before["num_samples"])) + wilson_half_width(
        robust_after, int(after["num_samples"])
    )
    return "improved" if robust_after - robust_before > noise else "not_improved"


def verdict_summary(verdict: str) -> str:
    """One line a person reads: what the verdict means for the model handed back."""
    return {
        "improved": "improved: more robust on the test split, clean accuracy kept",
        "clean_dropped": "clean_dropped: clean accuracy fell by more than max_clean_drop",
        "not_improved": "not_improved: robust accuracy did not rise beyond its noise",
    }.get(verdict, verdict)
