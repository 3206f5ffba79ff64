"""The names of the evaluation's attack ensembles (core.robust.ensemble builds them).

Torch-free: the API offers these names without importing the engine.
"""

from __future__ import annotations

# fast: PGD-k alone; standard: PGD-k, APGD-CE, APGD-T; autoattack: PGD-k, then AutoAttack.
ATTACK_PRESETS = ("fast", "standard", "autoattack")
