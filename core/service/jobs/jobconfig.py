"""A job's stored config (plain JSON, defaults filled in by the API) as engine objects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.robust.attack_presets import ATTACK_PRESETS
from core.robust.augmentation_choice import default_augmentation
from core.robust.errors import InvalidConfig
from core.robust.finetune_config import FinetuneConfig
from core.robust.threat import ThreatModel

# The evaluation's attack presets, core.robust.evaluate's own: fast = PGD-k alone; standard =
# the per-example worst case of PGD-k, APGD-CE and APGD-T; autoattack = PGD-k, then the full
# standard AutoAttack on the examples it left.
EVALUATION_ATTACKS: tuple[str, ...] = ATTACK_PRESETS


@dataclass(frozen=True)
class EvaluationSettings:
    # 10: at 10 steps the standard ensemble's headline is within noise of AutoAttack's on the
    # digits CNN and every zoo model, clean and hardened (benchmarks/eval_cost.py), at about
    # half the cost of 20.
    attack_steps: int = 10
    restarts: int = 1
    attack: str = "standard"
    # Kept for configs stored before `attack` existed: evaluation_settings reads true as
    # attack "autoattack". New configs store `attack` only.
    autoattack: bool = False
    epsilons: list[float] | None = None
    # None: a harden job evaluates as many test images as fit its budget
    # (core.service.jobs.eval_budget), an evaluate job
    # core.service.jobs.eval_budget.DEFAULT_MAX_SAMPLES.
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.attack not in EVALUATION_ATTACKS:
            raise InvalidConfig(
                f"evaluation.attack must be one of {', '.join(EVALUATION_ATTACKS)}, "
                f"got {self.attack!r}"
            )


def threat_model(config: dict[str, Any]) -> ThreatModel:
    threat = config["threat_model"]
    return ThreatModel(
        norm=threat["norm"],
        epsilon=threat["epsilon"],
        step_size=threat.get("step_size"),
        steps=threat["steps"],
    )


# Hyperparameters of the job that are not FinetuneConfig's: how the data is split.
VALIDATION_FRACTION = 0.1
_DATA_KNOBS = ("validation_fraction",)


def finetune_config(
    config: dict[str, Any],
    *,
    dataset: str | None = None,
    input_shape: Sequence[int] | None = None,
) -> FinetuneConfig:
    """The engine's config of a job's. Augmentation null ("auto") is resolved by the job's
    `dataset` (builtin:<name> or ds_ id) and its images' `input_shape` where they are given,
    as the engine process does before training; without them (the API's check of the knobs,
    the evaluation's budget) it stays at the engine's "none", which trains no differently in
    cost."""
    hyper = {
        key: value
        for key, value in config["hyperparameters"].items()
        if value is not None and key not in _DATA_KNOBS
    }
    if "augmentation" not in hyper and dataset is not None and input_shape is not None:
        hyper["augmentation"] = default_augmentation(dataset=dataset, input_shape=input_shape)
    return FinetuneConfig(seed=config["seed"], **hyper)


def validation_fraction(config: dict[str, Any]) -> float:
    """The share of train held out for validation (jobs stored before it existed: the default)."""
    value = config["hyperparameters"].get("validation_fraction")
    return VALIDATION_FRACTION if value is None else float(value)


def evaluation_settings(config: dict[str, Any]) -> EvaluationSettings:
    """The stored evaluation settings; a config stored before `attack` existed that asked for
    `autoattack` gets the preset that runs it, one without gets today's default preset."""
    stored = dict(config["evaluation"])
    if "attack" not in stored and stored.get("autoattack"):
        stored["attack"] = "autoattack"
    return EvaluationSettings(**stored)
