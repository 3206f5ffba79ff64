"""The zoo benchmark's verdicts and tables: the best fixed rate per architecture, whether
the defaults met the two goals, and the printed tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.common import fmt_num, fmt_pct, markdown_table, mean_and_spread
from benchmarks.zoo_runs import DEFAULTS

MAX_CLEAN_LOSS = 0.03  # the defaults' clean accuracy: at most 3 points below the pretrained
MAX_ROBUST_GAP = 0.02  # the defaults' PGD-20: at most 2 points below the best fixed rate's


def _mean(runs: Sequence[dict[str, Any]], key: str) -> float:
    return mean_and_spread([r[key] for r in runs])[0]


def best_fixed_rate(result: dict[str, Any]) -> str | None:
    """The rate with the highest mean PGD-20 among those within 3 clean points of the
    pretrained model; else the one with the highest mean clean accuracy."""
    labels = [f"{rate:g}" for rate in result["rates"]]
    if not labels:
        return None
    pre_clean = _mean(result["pretrained"], "clean")
    runs = result["runs"]
    eligible = [
        label
        for label in labels
        if _mean(runs[label], "clean") >= pre_clean - MAX_CLEAN_LOSS - 1e-9
    ]
    if eligible:
        return max(eligible, key=lambda label: _mean(runs[label], "robust"))
    return max(labels, key=lambda label: _mean(runs[label], "clean"))


def judge(result: dict[str, Any], best: str | None) -> dict[str, bool | None]:
    """The two goals for one architecture (None: not measured)."""
    runs = result["runs"]
    if DEFAULTS not in runs:
        return {"clean_within_3": None, "robust_within_2_of_best": None}
    pre_clean = _mean(result["pretrained"], "clean")
    clean_ok = _mean(runs[DEFAULTS], "clean") >= pre_clean - MAX_CLEAN_LOSS - 1e-9
    robust_ok = None
    if best is not None:
        robust_ok = (
            _mean(runs[DEFAULTS], "robust") >= _mean(runs[best], "robust") - MAX_ROBUST_GAP - 1e-9
        )
    return {"clean_within_3": clean_ok, "robust_within_2_of_best": robust_ok}


def _verdict(value: bool | None) -> str:
    return "—" if value is None else ("pass" if value else "FAIL")


def _lrs(runs: Sequence[dict[str, Any]]) -> str:
    values = [r["peak_lr"] for r in runs if r["peak_lr"] is not None]
    if not values:
        return "—"
    return ", ".join(f"{v:.3g}" for v in values)


def _clean_and_robust(runs: Sequence[dict[str, Any]]) -> str:
    return f"{100 * _mean(runs, 'clean'):.1f} / {100 * _mean(runs, 'robust'):.1f}"


def tables(results: dict[str, dict[str, Any]]) -> list[str]:
    main_rows, rate_rows, time_rows = [], [], []
    grid_size = max(len(result["rates"]) for result in results.values())
    for name, result in results.items():
        runs, pre = result["runs"], result["pretrained"]
        best = result["best_fixed_rate"]
        checks = result["checks"]
        defaults = runs.get(DEFAULTS)
        main_rows.append(
            [
                name,
                result["optimizer"],
                fmt_pct([r["clean"] for r in pre]),
                fmt_pct([r["robust"] for r in pre]),
                fmt_pct([r["clean"] for r in defaults]) if defaults else "—",
                fmt_pct([r["robust"] for r in defaults]) if defaults else "—",
                _lrs(defaults) if defaults else "—",
                best or "—",
                fmt_pct([r["clean"] for r in runs[best]]) if best else "—",
                fmt_pct([r["robust"] for r in runs[best]]) if best else "—",
                _verdict(checks["clean_within_3"]),
                _verdict(checks["robust_within_2_of_best"]),
            ]
        )
        rate_rows.append(
            [f"{name} ({result['optimizer']})", _clean_and_robust(pre)]
            + ([_clean_and_robust(defaults)] if defaults else [])
            + [
                f"{label}: {_clean_and_robust(runs[label])}" + (" *" if label == best else "")
                for label in (f"{r:g}" for r in result["rates"])
            ]
        )
        fixed = [r for label, rs in runs.items() if label != DEFAULTS for r in rs]
        probes = [r["probe_seconds"] for r in defaults or [] if r["probe_seconds"] is not None]
        time_rows.append(
            [
                name,
                fmt_num([r["seconds"] for r in pre]),
                fmt_num([r["harden_seconds"] for r in defaults]) if defaults else "—",
                fmt_num(probes) if probes else "—",
                fmt_num([r["harden_seconds"] for r in fixed]) if fixed else "—",
            ]
        )
    main = markdown_table(
        [
            "model",
            "optimizer",
            "clean before %",
            "PGD-20 before %",
            "defaults clean %",
            "defaults PGD-20 %",
            "defaults' peak lr (per seed)",
            "best fixed lr",
            "best fixed clean %",
            "best fixed PGD-20 %",
            "clean within 3",
            "robust within 2 of best fixed",
        ],
        main_rows,
    )
    by_rate = markdown_table(
        [
            "model (mean clean / PGD-20 %)",
            "pretrained",
            *([DEFAULTS] if any(DEFAULTS in r["runs"] for r in results.values()) else []),
            *(f"rate {index + 1} of the grid" for index in range(grid_size)),
        ],
        rate_rows,
    )
    timing = markdown_table(
        [
            "model",
            "clean training s",
            "hardening s, defaults (probe included)",
            "probe s",
            "hardening s, per fixed rate",
        ],
        time_rows,
    )
    return [main, by_rate + "\n\n(* the best fixed rate)", timing]
