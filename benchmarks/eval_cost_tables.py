"""The eval_cost benchmark's report: the cost, candidate and strength tables, and the
summary of whether the defaults met the two goals."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from benchmarks.common import markdown_table
from benchmarks.eval_cost_cases import (
    DEFAULT_JOB_ATTACK_STEPS,
    DEFAULT_JOB_EPOCHS,
    MAX_COST_RATIO,
    REFERENCE_PGD_STEPS,
    REFERENCE_RESTARTS,
    STATES,
    Setting,
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _pct_interval(record: dict[str, Any]) -> str:
    low, high = record["interval"]
    return f"{_pct(record['accuracy'])} [{_pct(low)}, {_pct(high)}]"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _cost_table(results: dict[str, dict[str, Any]], defaults: str) -> str:
    rows = []
    for name, result in results.items():
        training, cost = result["training"], result["cost"][defaults]
        before, after = (result["states"][state]["evaluations"][defaults] for state in STATES)
        per_image = cost["passes_per_image"]
        rows.append(
            [
                name,
                f"{training['epochs']} ep, PGD-{training['train_attack_steps']}, "
                f"{training['train_images']} img",
                f"{training['seconds']:.0f} / {training['passes'] / 1000:.0f}k",
                cost["num_samples"],
                f"{before['seconds']:.0f} / {before['forward_passes'] / 1000:.0f}k",
                f"{after['seconds']:.0f} / {after['forward_passes'] / 1000:.0f}k",
                f"{per_image['before']:.0f} / {per_image['after']:.0f} "
                f"({cost['budget_bound_per_image']:.0f})",
                f"**{cost['ratio_seconds']:.2f}x** / **{cost['ratio_passes']:.2f}x**",
                cost["max_samples_within_ratio"],
                f"{cost['default_job_samples']}: {cost['ratio_passes_default_job']:.2f}x",
            ]
        )
    return markdown_table(
        [
            "model",
            "harden job",
            "training s / passes",
            "images evaluated",
            "eval before s / passes",
            "eval after s / passes",
            "passes per image before / after (budget's bound)",
            "eval / training: s / passes",
            "max_samples within 0.3x",
            f"{DEFAULT_JOB_EPOCHS}-epoch PGD-{DEFAULT_JOB_ATTACK_STEPS} job: images, eval / "
            "training",
        ],
        rows,
    )


def _candidate_table(results: dict[str, dict[str, Any]], settings: Sequence[Setting]) -> str:
    rows = []
    for name, result in results.items():
        cells = [name]
        for setting in settings:
            cost = result["cost"][setting.label]
            cells.append(
                f"{cost['num_samples']}: {cost['ratio_passes']:.2f}x; "
                f"{cost['default_job_samples']}: {cost['ratio_passes_default_job']:.2f}x"
            )
        rows.append(cells)
    return markdown_table(
        [
            "images: eval / training passes, this job; 10-epoch PGD-10 job",
            *(
                f"{s.label} ({s.attacks}, max_samples {s.max_samples or 'budget'})"
                for s in settings
            ),
        ],
        rows,
    )


def _strength_table(results: dict[str, dict[str, Any]]) -> str:
    rows = []
    pooled = {"n": 0.0, "aa": 0.0, "pgd": 0.0, "both": 0.0}
    labels: list[str] = []
    for name, result in results.items():
        for state in STATES:
            record = result["states"][state]
            refs, strength = record["references"], record["strength"]
            labels = list(strength)
            head = strength[labels[0]]
            n = refs["num_samples"]
            pooled["n"] += n
            pooled["aa"] += head["above_autoattack"] * n
            pooled["pgd"] += head["above_pgd50x3"] * n
            pooled["both"] += head["above_worst_of_both"] * n
            rows.append(
                [
                    f"{name} {'clean' if state == 'before' else 'hardened'}",
                    n,
                    _pct(refs["clean_accuracy"]),
                    _pct_interval(head),
                    *(_pct(strength[label]["accuracy"]) for label in labels[1:]),
                    _pct_interval(refs["pgd50x3"]),
                    _pct_interval(refs["autoattack"]),
                    _points(head["above_autoattack"]),
                    _points(head["above_pgd50x3"]),
                    _points(head["above_worst_of_both"]),
                    _verdict(head["within_noise"]),
                ]
            )
    total = pooled["n"] or 1.0
    rows.append(
        ["all, pooled", int(pooled["n"]), "", "", *([""] * (len(labels) - 1)), "", ""]
        + [_points(pooled[key] / total) for key in ("aa", "pgd", "both")]
        + [""]
    )
    return markdown_table(
        [
            "model",
            "n",
            "clean %",
            f"headline ({labels[0]}) % [95%]",
            *(f"{label} %" for label in labels[1:]),
            f"PGD-{REFERENCE_PGD_STEPS} x{REFERENCE_RESTARTS} % [95%]",
            "AutoAttack % [95%]",
            "headline - AA (pts)",
            "headline - PGD-50x3 (pts)",
            "headline - worst of both (pts)",
            "within 2 pts of both",
        ],
        rows,
    )


def tables(results: dict[str, dict[str, Any]], settings: Sequence[Setting]) -> list[str]:
    return [
        _cost_table(results, settings[0].label),
        _candidate_table(results, settings),
        _strength_table(results),
    ]


def summarize(results: dict[str, dict[str, Any]], settings: Sequence[Setting]) -> dict[str, Any]:
    """Whether the defaults met the two goals, and how each candidate fares."""
    per_setting = {}
    for setting in settings:
        costs = [r["cost"][setting.label] for r in results.values()]
        strength = {
            f"{name} {state}": r["states"][state]["strength"][setting.attacks]
            for name, r in results.items()
            for state in STATES
        }
        bound = costs[0]["budget_bound_per_image"]
        per_setting[setting.label] = {
            "setting": dataclasses.asdict(setting),
            "cost_within_0.3x_on_every_model": all(
                c["ratio_passes"] <= MAX_COST_RATIO and c["ratio_seconds"] <= MAX_COST_RATIO
                for c in costs
            ),
            "cost_within_0.3x_of_a_10_epoch_job_on_every_model": all(
                c["ratio_passes_default_job"] <= MAX_COST_RATIO for c in costs
            ),
            "worst_ratio_passes": max(c["ratio_passes"] for c in costs),
            "worst_ratio_passes_default_job": max(c["ratio_passes_default_job"] for c in costs),
            "max_samples_within_0.3x_on_every_model": min(
                c["max_samples_within_ratio"] for c in costs
            ),
            "max_samples_within_0.3x_of_a_10_epoch_job_on_every_model": min(
                c["max_samples_within_ratio_default_job"] for c in costs
            ),
            "passes_per_image_within_budget_bound": (
                None
                if bound is None
                else all(v <= bound for c in costs for v in c["passes_per_image"].values())
            ),
            "headline_within_noise_on_every_model": all(
                c["within_noise"] for c in strength.values()
            ),
            "models_not_within_noise": [k for k, c in strength.items() if not c["within_noise"]],
        }
    chosen = per_setting[settings[0].label]
    return {
        "chosen_defaults": dataclasses.asdict(settings[0]),
        "defaults_cost_within_0.3x": chosen["cost_within_0.3x_on_every_model"],
        "defaults_cost_within_0.3x_of_a_10_epoch_job": chosen[
            "cost_within_0.3x_of_a_10_epoch_job_on_every_model"
        ],
        "defaults_headline_within_noise_of_autoattack": chosen[
            "headline_within_noise_on_every_model"
        ],
        "by_setting": per_setting,
    }
