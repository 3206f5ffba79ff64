"""How far to trust an accuracy measured on n examples: the Wilson score interval.

The Wilson interval (Wilson 1927) is the one to use for a proportion near 0 or 1 or on a few
hundred examples, where the normal approximation p ± z·sqrt(p(1-p)/n) leaves [0, 1] or has
far less than its nominal coverage (Brown, Cai & DasGupta 2001). It is centered at
(p + z²/2n) / (1 + z²/n), not at p. Pure Python: the torch-free verdict imports it too.
"""

from __future__ import annotations

import math

CONFIDENCE_LEVEL = 0.95
Z_95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


def wilson_interval(accuracy: float, samples: int, *, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval [low, high] of `accuracy` measured on `samples` examples."""
    if samples <= 0:
        return 0.0, 1.0
    n = float(samples)
    p = min(max(accuracy, 0.0), 1.0)
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2.0 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def wilson_half_width(accuracy: float, samples: int, *, z: float = Z_95) -> float:
    """Half the width of the Wilson score interval of `accuracy` measured on `samples`."""
    if samples <= 0:
        return math.inf
    low, high = wilson_interval(accuracy, samples, z=z)
    return (high - low) / 2.0
