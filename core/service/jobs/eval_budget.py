"""How many test images a harden job's evaluation uses when the job does not say.

The two evaluations of a harden job (before and after) may together cost at most
EVAL_BUDGET_FRACTION of its training, counted in forward passes over images (the engine's
unit: an attack step is one forward and one backward pass). Training costs epochs x train
images x (attack steps + 1), plus each epoch's validation; one evaluation costs about
passes_per_image(k) per test image at the standard preset with k attack steps (PGD-k on the
clean-correct images, APGD-CE and APGD-T on the survivors, the epsilon curve's search, the
checks' share; benchmarks/eval_cost.py reports it per model). A large job evaluates
DEFAULT_MAX_SAMPLES images; a small one fewer, but never fewer than MIN_SAMPLES: below that the
95% interval grows past +-7 points and the verdict says nothing, so a very small job pays more
than the fraction (its events and manifest show what the evaluation cost).

Plain Python: the API and the worker's parent read it without torch.
"""

from __future__ import annotations

import math

EVAL_BUDGET_FRACTION = 0.3
DEFAULT_MAX_SAMPLES = 1000
MIN_SAMPLES = 200


def passes_per_image(attack_steps: int) -> float:
    """Forward passes per test image of one standard evaluation at `attack_steps`, an upper
    bound: measured 75 (clean) and 83 (hardened) for the digits CNN at 20 steps, 43 and 47 at
    10; ResNet-18 on digits32 about 71 at 10 (benchmarks/eval_cost.py, before the checks were
    halved); a model that keeps half its images under attack pays APGD on that half."""
    return 6.0 * attack_steps + 15.0


def training_passes(
    *, train_images: int, epochs: int, train_attack_steps: int, val_images: int, val_steps: int
) -> int:
    """Forward passes of a harden job's training: each epoch's adversarial steps over the
    training images and its validation (clean and PGD) over the validation images."""
    per_epoch = train_images * (train_attack_steps + 1) + val_images * (val_steps + 1)
    return epochs * per_epoch


def harden_evaluation_samples(*, training: int, attack_steps: int) -> int:
    """Test images per evaluation so that before + after cost at most the budget's share of
    `training` passes, within [MIN_SAMPLES, DEFAULT_MAX_SAMPLES]."""
    affordable = EVAL_BUDGET_FRACTION * training / (2.0 * passes_per_image(attack_steps))
    return max(MIN_SAMPLES, min(DEFAULT_MAX_SAMPLES, math.floor(affordable)))
