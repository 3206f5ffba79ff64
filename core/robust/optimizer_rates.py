"""The optimizers a fine-tuning run may use, and the learning rates that suit each.

The two optimizers' rates differ by about 100x; each has its own grid for the probe
(core.robust.lr_probe), and its own fallback rate. Torch-free: the API names the optimizers too.
"""

from __future__ import annotations

OPTIMIZERS = ("auto", "sgd", "adamw")

# Rates at batch size REFERENCE_BATCH_SIZE, a 100x span in steps of about 3.16x; the probe's
# grid is these times batch_size / REFERENCE_BATCH_SIZE (the linear scaling rule).
BASE_RATES = {
    "sgd": (0.002, 0.006, 0.02, 0.06, 0.2),
    "adamw": (2e-5, 6e-5, 2e-4, 6e-4, 2e-3),
}
# Without a validation split there is nothing to score the probe's candidates on: this is used.
FALLBACK_BASE_RATES = {"sgd": 0.02, "adamw": 2e-4}
REFERENCE_BATCH_SIZE = 128


def candidate_rates(batch_size: int, optimizer: str = "sgd") -> list[float]:
    scale = batch_size / REFERENCE_BATCH_SIZE
    return [rate * scale for rate in BASE_RATES[optimizer]]


def fallback_rate(batch_size: int, optimizer: str = "sgd") -> float:
    return FALLBACK_BASE_RATES[optimizer] * batch_size / REFERENCE_BATCH_SIZE
