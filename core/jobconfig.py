"""A job's stored config (plain JSON, defaults filled in by the API) as engine objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.robust.finetune import FinetuneConfig
from core.robust.threat import ThreatModel


@dataclass(frozen=True)
class EvaluationSettings:
    attack_steps: int = 20
    restarts: int = 1
    autoattack: bool = False
    epsilons: list[float] | None = None
    max_samples: int = 1000


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


def finetune_config(config: dict[str, Any]) -> FinetuneConfig:
    hyper = {
        key: value
        for key, value in config["hyperparameters"].items()
        if value is not None and key not in _DATA_KNOBS
    }
    return FinetuneConfig(seed=config["seed"], **hyper)


def validation_fraction(config: dict[str, Any]) -> float:
    """The share of train held out for validation (jobs stored before it existed: the default)."""
    value = config["hyperparameters"].get("validation_fraction")
    return VALIDATION_FRACTION if value is None else float(value)


def evaluation_settings(config: dict[str, Any]) -> EvaluationSettings:
    return EvaluationSettings(**config["evaluation"])
