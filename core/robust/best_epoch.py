"""Which epoch a fine-tuning run hands back: a tier first, then robust accuracy.

An epoch's tier: it kept validation clean accuracy within max_clean_drop of the starting
model's, lost more, or collapsed (below the guards' bound). A higher tier always wins; within a
tier, the more robust epoch. Handing back the least damaged epoch instead would hand back the
uploaded model itself when every epoch costs clean accuracy: a holdout carved from the training
data flatters the uploaded model, which has seen it. The job's verdict, on the test split, says
whether the clean accuracy held.
"""

from __future__ import annotations

KEPT, LOST, COLLAPSED = 2, 1, 0


def rank_epoch(
    val_clean: float | None,
    val_robust: float | None,
    *,
    epoch: int,
    reference: float | None,
    max_clean_drop: float,
    collapse_threshold: float | None,
) -> tuple[int, float]:
    """An epoch's place in the choice of the best: (tier, robust accuracy). Without validation
    the latest epoch wins; `collapse_threshold` None: no collapse tier (the guards are off)."""
    if val_clean is None or val_robust is None:
        return KEPT, float(epoch)
    if reference is None:
        return KEPT, val_robust
    if kept_clean(val_clean, reference, max_clean_drop):
        return KEPT, val_robust
    if collapse_threshold is not None and val_clean < collapse_threshold:
        return COLLAPSED, val_robust
    return LOST, val_robust


def kept_clean(clean: float, reference: float, max_clean_drop: float) -> bool:
    """Clean accuracy within max_clean_drop of the reference; the tolerance keeps an exact
    "drop == max_clean_drop" inside despite float rounding."""
    return clean >= reference - max_clean_drop - 1e-9
