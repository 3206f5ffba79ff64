"""The threat model: which perturbations an attacker may add, in [0,1] pixel space."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from core.robust.errors import InvalidConfig

NORMS = ("linf", "l2")


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius `epsilon` around each image, and the PGD that searches it.

    `step_size` defaults to 2.5 * epsilon / steps (Madry et al.'s rule, which gives
    2/255 for epsilon 8/255 and 10 steps), so the attack can cross the ball and back.
    """

    norm: str = "linf"
    epsilon: float = 8 / 255
    step_size: float | None = None
    steps: int = 10
    random_start: bool = True

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise InvalidConfig(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise InvalidConfig(f"epsilon must be a finite number >= 0, got {self.epsilon}")
        if self.norm == "linf" and self.epsilon > 1:
            raise InvalidConfig(f"a linf epsilon is in [0,1] pixel space, got {self.epsilon}")
        if self.steps < 1:
            raise InvalidConfig(f"steps must be at least 1, got {self.steps}")
        if self.step_size is not None and not (
            self.step_size > 0 and math.isfinite(self.step_size)
        ):
            raise InvalidConfig(f"step_size must be a positive number, got {self.step_size}")

    @property
    def resolved_step_size(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 2.5 * self.epsilon / self.steps

    def with_epsilon(self, epsilon: float) -> ThreatModel:
        """The same attack at another radius (the step size follows the radius)."""
        return replace(self, epsilon=epsilon, step_size=None)

    def with_steps(self, steps: int) -> ThreatModel:
        """The same radius searched with another number of steps (the step size follows)."""
        return replace(self, steps=steps, step_size=None)
