"""A harden job's verdict from its before/after test evaluations: `improved`, `clean_dropped` or
`not_improved`. Pure functions of the two reports (plain dicts), no torch: the trusted worker
parent computes it, and the CLI exits non-zero unless the model improved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

# The intervals module is plain Python: importing it does not load torch.
from core.robust.finetune_config import FinetuneConfig
from core.robust.intervals import Z_95, wilson_half_width, wilson_interval

__all__ = [
    "DEFAULT_MAX_CLEAN_DROP",
    "VERDICTS",
    "Z_95",
    "Verdict",
    "harden_verdict",
    "robust_noise",
    "verdict_summary",
    "wilson_half_width",
    "wilson_interval",
]

Verdict = Literal["improved", "clean_dropped", "not_improved"]
VERDICTS: tuple[Verdict, ...] = ("improved", "clean_dropped", "not_improved")
DEFAULT_MAX_CLEAN_DROP: float = FinetuneConfig.max_clean_drop  # the engine's own default


def robust_noise(before: Mapping[str, Any], after: Mapping[str, Any]) -> float:
    """How far test robust accuracy must rise for the verdict to call it real: the 95% Wilson
    half-widths of before's and after's robust accuracy, each on its own sample count, added."""
    return wilson_half_width(
        float(before["robust_accuracy"]), int(before["num_samples"])
    ) + wilson_half_width(float(after["robust_accuracy"]), int(after["num_samples"]))


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
    rise = float(after["robust_accuracy"]) - float(before["robust_accuracy"])
    return "improved" if rise > robust_noise(before, after) else "not_improved"


def verdict_summary(verdict: str) -> str:
    """One line a person reads: what the verdict means for the model handed back."""
    return {
        "improved": "improved: more robust on the test split, clean accuracy kept",
        "clean_dropped": "clean_dropped: clean accuracy fell by more than max_clean_drop",
        "not_improved": "not_improved: robust accuracy did not rise beyond its noise",
    }.get(verdict, verdict)
