"""Evaluation reports built by hand in the two shapes a job may hold: the one the engine stores
now (an attack preset, its stages, each accuracy's 95% interval, each check's sample count) and
the one older jobs stored (PGD as the headline, no intervals)."""

from __future__ import annotations

from typing import Any

THREAT = {"norm": "linf", "epsilon": 0.0314, "step_size": None, "steps": 10}


def new_report(
    *, robust: float = 0.52, pgd: float = 0.55, interval: list[float] | None = None
) -> dict[str, Any]:
    """A report in the shape core.robust.EvalReport.to_dict() stores (attack "standard")."""
    return {
        "attack": "standard",
        "clean_accuracy": 0.95,
        "robust_accuracy": robust,
        "pgd_accuracy": pgd,
        "fgsm_accuracy": 0.70,
        "autoattack_accuracy": None,
        "stages": [
            {"name": "PGD-20", "attacked": 950, "robust_accuracy": pgd, "seconds": 1.2},
            {"name": "APGD-CE", "attacked": 550, "robust_accuracy": 0.53, "seconds": 0.8},
            {"name": "APGD-T", "attacked": 530, "robust_accuracy": robust, "seconds": 1.9},
        ],
        "accuracy_by_epsilon": {"0": 0.95, "0.00784": 0.9, "0.0314": robust},
        "confidence_level": 0.95,
        "confidence_intervals": {
            "clean_accuracy": [0.936, 0.962],
            "robust_accuracy": interval or [0.489, 0.551],
            "pgd_accuracy": [0.519, 0.581],
            "fgsm_accuracy": [0.671, 0.727],
            "accuracy_by_epsilon": {
                "0": [0.936, 0.962],
                "0.00784": [0.880, 0.917],
                "0.0314": interval or [0.489, 0.551],
            },
        },
        "threat": THREAT,
        "attack_steps": 20,
        "restarts": 1,
        "num_samples": 1000,
        "subset_indices": [0, 1, 2],
        "seed": 0,
        "seconds": 12.3,
        "forward_passes": 41000,
        "checks": [
            {
                "name": "pgd_beats_fgsm",
                "passed": True,
                "detail": "PGD 0.55 <= FGSM 0.70",
                "num_samples": 200,
            },
            {
                "name": "large_epsilon_reaches_chance",
                "passed": True,
                "detail": "0.0 at epsilon 1",
                "num_samples": 100,
            },
        ],
        "warnings": [],
    }


def old_report(*, robust: float = 0.5, autoattack: float | None = None) -> dict[str, Any]:
    """A report as jobs stored it before presets and intervals: PGD was the headline."""
    return {
        "clean_accuracy": 0.9,
        "robust_accuracy": robust,
        "fgsm_accuracy": 0.6,
        "autoattack_accuracy": autoattack,
        "accuracy_by_epsilon": {"0": 0.9, "0.1": 0.7, "0.2": robust},
        "threat": {"norm": "linf", "epsilon": 0.2, "step_size": None, "steps": 10},
        "attack_steps": 10,
        "restarts": 1,
        "num_samples": 100,
        "subset_indices": [0, 1],
        "seed": 0,
        "seconds": 3.0,
        "checks": [{"name": "pgd_beats_fgsm", "passed": True, "detail": "PGD 0.5 <= FGSM 0.6"}],
        "warnings": [],
    }
