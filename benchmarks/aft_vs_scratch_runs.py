"""benchmarks/aft_vs_scratch.py's runs: one seed's pretraining and three recipes, what each
cost, and the comparison of the costs to reach a validation robust accuracy."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from benchmarks.aft_vs_scratch_settings import SCRATCH, Setting
from benchmarks.common import log
from core.robust.finetune import EpochMetrics, adversarial_finetune


@dataclass
class Run:
    clean: float
    robust: float
    best_epoch: int
    history: list[EpochMetrics]
    batch_size: int
    train_images: int
    peak_lr: float  # the rate it trained at: the config's or the probe's
    probe_passes: int = 0  # image passes of the peak-rate probe (none with a fixed rate)
    probe_seconds: float = 0.0

    def cost_at(self, epoch: int) -> tuple[int, float]:
        """(cumulative adversarial image passes, training seconds) at the end of `epoch`, the
        probe's included (a run cannot start without it)."""
        metrics = self.history[epoch - 1]
        return (
            self._image_passes(metrics.gradient_passes) + self.probe_passes,
            metrics.train_seconds + self.probe_seconds,
        )

    def _image_passes(self, batch_passes: int) -> int:
        """The engine's batch `gradient_passes` as passes over training images."""
        steps_per_epoch = math.ceil(self.train_images / self.batch_size)
        return round(batch_passes * self.train_images / steps_per_epoch)

    @property
    def total_cost(self) -> tuple[int, float]:
        return self.cost_at(len(self.history))

    @property
    def best_val_robust(self) -> float:
        return max(m.val_robust_accuracy or 0.0 for m in self.history)

    def first_epoch_reaching(self, target: float) -> int | None:
        for metrics in self.history:
            if (metrics.val_robust_accuracy or 0.0) >= target - 1e-9:
                return metrics.epoch
        return None

    def to_json(self) -> dict[str, Any]:
        passes, seconds = self.total_cost
        return {
            "test_clean_accuracy": self.clean,
            "test_pgd20_accuracy": self.robust,
            "best_epoch": self.best_epoch,
            "peak_lr": self.peak_lr,
            "adversarial_image_passes": passes,
            "adversarial_train_seconds": seconds,
            "probe_image_passes": self.probe_passes,
            "probe_seconds": self.probe_seconds,
            "history": [asdict(m) for m in self.history],
        }


def run_seed(setting: Setting, seed: int) -> dict[str, Any]:
    runs: dict[str, Run] = {}
    pretrained = setting.pretrain(seed)
    pre_clean, pre_robust = setting.evaluate(pretrained.model)
    log(
        f"seed {seed}: pretrained in {pretrained.seconds:.1f} s: clean {pre_clean:.3f} "
        f"PGD-20 {pre_robust:.3f}"
    )
    for name, config in setting.configs.items():
        config = replace(config, seed=seed)
        start = setting.fresh(seed) if name == SCRATCH else pretrained.model
        result = adversarial_finetune(
            start, setting.train, setting.threat, config, val=setting.val, device=setting.device
        )
        clean, robust = setting.evaluate(result.model)
        probe = result.lr_probe
        probe_passes = 0
        if probe is not None:
            probe_passes = probe.gradient_passes * config.batch_size  # batches of full size
        runs[name] = Run(
            clean,
            robust,
            result.best_epoch,
            result.history,
            config.batch_size,
            len(setting.train),
            result.peak_lr,
            probe_passes=probe_passes,
            probe_seconds=probe.seconds if probe is not None else 0.0,
        )
        log(
            f"seed {seed}: {name}: clean {clean:.3f} PGD-20 {robust:.3f} best epoch "
            f"{result.best_epoch} val robust "
            f"{[round(m.val_robust_accuracy or 0, 2) for m in result.history]} "
            f"({result.history[-1].train_seconds:.1f} s)"
        )
    return {
        "seed": seed,
        "pretrained": pretrained,
        "pretrained_test": (pre_clean, pre_robust),
        "runs": runs,
    }


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


def compare(
    seeds: list[dict[str, Any]], *, slow: str, fast: str, target_from: str
) -> dict[str, Any]:
    """Cost of `slow` over cost of `fast` to reach `target_from`'s best validation robust acc.

    The pretraining cost is added to whichever side is an AFT run (for the 'incl.' ratios).
    Where `slow` never reaches it, its whole run's cost over `fast`'s is a lower bound
    ("at_least_" keys).
    """
    per_seed = []
    for record in seeds:
        runs: dict[str, Run] = record["runs"]
        pre = record["pretrained"]
        target = runs[target_from].best_val_robust
        epochs = {name: runs[name].first_epoch_reaching(target) for name in (slow, fast)}
        entry: dict[str, Any] = {"seed": record["seed"], "target_val_robust": target}
        for side, name in (("slow", slow), ("fast", fast)):
            epoch = epochs[name]
            entry[f"{side}_epoch"] = epoch
            passes, seconds = runs[name].cost_at(epoch or len(runs[name].history))
            extra = (pre.image_passes, pre.seconds) if name != SCRATCH else (0, 0.0)
            prefix = "" if epoch is not None else "whole_run_"
            entry[f"{prefix}{side}_passes"], entry[f"{prefix}{side}_seconds"] = passes, seconds
            entry[f"{prefix}{side}_passes_incl_pretrain"] = passes + extra[0]
            entry[f"{prefix}{side}_seconds_incl_pretrain"] = seconds + extra[1]
        for unit in ("passes", "seconds", "passes_incl_pretrain", "seconds_incl_pretrain"):
            if epochs[fast] is None:
                continue
            if epochs[slow] is not None:
                entry[f"ratio_{unit}"] = ratio(entry[f"slow_{unit}"], entry[f"fast_{unit}"])
            else:
                entry[f"at_least_ratio_{unit}"] = ratio(
                    entry[f"whole_run_slow_{unit}"], entry[f"fast_{unit}"]
                )
        per_seed.append(entry)
    return {"slow": slow, "fast": fast, "target_from": target_from, "per_seed": per_seed}
