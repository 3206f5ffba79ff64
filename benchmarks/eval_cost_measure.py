"""The eval_cost benchmark's measurements: a case's hardening with its passes counted, each
setting's evaluation before and after, the strength references, and the cost ratios."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from benchmarks.common import log
from benchmarks.eval_cost_cases import (
    BATCH_SIZE,
    DEFAULT_JOB_ATTACK_STEPS,
    DEFAULT_JOB_EPOCHS,
    MAX_COST_RATIO,
    MAX_GAP,
    REFERENCE_PGD_STEPS,
    REFERENCE_RESTARTS,
    REFERENCE_SEED,
    SEED,
    STATES,
    Case,
    Setting,
)
from core.robust.attacks import pgd
from core.robust.autoattack import run_autoattack
from core.robust.ensemble import PassCounter
from core.robust.evaluation import evaluate
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.intervals import wilson_interval
from core.robust.measure import correct_under_attack, evaluation_subset, survivors
from core.service.jobs.eval_budget import passes_per_image


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def harden(case: Case, model: nn.Module, *, device: str) -> tuple[nn.Module, dict[str, Any]]:
    """The harden job's training, timed and with its passes counted; and its projection to a
    default 10-epoch PGD-10 job on the same data."""
    config = FinetuneConfig(epochs=case.epochs, seed=SEED, peak_lr=case.peak_lr, guards=True)
    started = time.perf_counter()
    result = adversarial_finetune(
        PassCounter(model), case.train, case.threat, config, val=case.val, device=device
    )
    seconds = time.perf_counter() - started
    counted = result.model
    assert isinstance(counted, PassCounter)  # the engine trains a copy of what it is given
    passes = counted.images
    step_passes = case.epochs * len(case.train) * (case.threat.steps + 1)
    overhead = passes - step_passes  # validation each epoch, the guard's starting loss
    projected = (
        DEFAULT_JOB_EPOCHS * len(case.train) * (DEFAULT_JOB_ATTACK_STEPS + 1)
        + overhead * DEFAULT_JOB_EPOCHS / case.epochs
    )
    record = {
        "epochs": case.epochs,
        "train_attack_steps": case.threat.steps,
        "peak_lr": case.peak_lr,
        "train_images": len(case.train),
        "val_images": len(case.val),
        "seconds": seconds,
        "passes": passes,
        "budget_estimate": case.budget_training(
            epochs=case.epochs, train_attack_steps=case.threat.steps
        ),
        "step_passes_computed": step_passes,
        "validation_and_guard_passes": overhead,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "load_average": _load(),
        "default_job": {
            "epochs": DEFAULT_JOB_EPOCHS,
            "train_attack_steps": DEFAULT_JOB_ATTACK_STEPS,
            "passes": round(projected),
            "budget_estimate": case.budget_training(
                epochs=DEFAULT_JOB_EPOCHS, train_attack_steps=DEFAULT_JOB_ATTACK_STEPS
            ),
        },
    }
    return counted.model.eval(), record


def run_setting(
    model: nn.Module,
    case: Case,
    setting: Setting,
    *,
    max_samples: int,
    device: str,
    headline_only: bool = False,
) -> dict[str, Any]:
    """evaluate() with `setting`: as a job runs it, or (headline_only) without the sanity
    checks and the epsilon curve, which run after the headline and do not change it."""
    report = evaluate(
        model,
        case.test,
        case.threat,
        attack=setting.attack,
        attack_steps=setting.attack_steps,
        restarts=setting.restarts,
        epsilons=[case.threat.epsilon] if headline_only else None,
        max_samples=max_samples,
        seed=SEED,
        batch_size=BATCH_SIZE,
        sanity_checks=not headline_only,
        device=device,
    )
    return {
        "setting": dataclasses.asdict(setting),
        "headline_only": headline_only,
        "num_samples": report.num_samples,
        "subset_indices": report.subset_indices,
        "clean_accuracy": report.clean_accuracy,
        "robust_accuracy": report.robust_accuracy,
        "pgd_accuracy": report.pgd_accuracy,
        "confidence_intervals": report.confidence_intervals(),
        "seconds": report.seconds,
        "headline_seconds": sum(stage.seconds for stage in report.stages),
        "forward_passes": report.forward_passes,
        "stages": [dataclasses.asdict(stage) for stage in report.stages],
        "checks": [dataclasses.asdict(check) for check in report.checks],
        "warnings": report.warnings,
        "load_average": _load(),
    }


def _accuracy_record(robust: torch.Tensor, *, seconds: float, passes: int) -> dict[str, Any]:
    accuracy = float(robust.float().mean()) if len(robust) else 0.0
    return {
        "accuracy": accuracy,
        "interval": list(wilson_interval(accuracy, len(robust))),
        "seconds": seconds,
        "forward_passes": passes,
    }


def references(model: nn.Module, case: Case, *, device: str) -> dict[str, Any]:
    """PGD-50 x3 and standard AutoAttack on the strength subset, each on its clean-correct
    examples, and their per-example worst case."""
    indices = evaluation_subset(case.test, max_samples=case.strength_samples, seed=SEED)
    subset = case.test.subset(indices)
    target = torch.device(device)
    correct = correct_under_attack(model, subset, None, batch_size=BATCH_SIZE, device=target)
    strong = case.threat.with_steps(REFERENCE_PGD_STEPS)
    generator = torch.Generator(device=target).manual_seed(REFERENCE_SEED)

    def reference_pgd(counted: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x, y: pgd(
            counted, x, y, strong, restarts=REFERENCE_RESTARTS, generator=generator
        )

    def autoattack(counted: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda x, y: run_autoattack(
            counted, x, y, case.threat, num_classes=case.num_classes, seed=SEED
        )

    records: dict[str, Any] = {
        "subset_indices": indices.tolist(),
        "num_samples": len(subset),
        "clean_accuracy": float(correct.float().mean()),
    }
    masks = {}
    for name, make in (("pgd50x3", reference_pgd), ("autoattack", autoattack)):
        counted = PassCounter(model)
        started = time.perf_counter()
        masks[name] = survivors(
            counted, subset, correct, make(counted), batch_size=BATCH_SIZE, device=target
        )
        records[name] = _accuracy_record(
            masks[name], seconds=time.perf_counter() - started, passes=counted.images
        ) | {"load_average": _load()}
    records["worst_of_both"] = _accuracy_record(
        masks["pgd50x3"] & masks["autoattack"], seconds=0.0, passes=0
    )
    return records


def strength_checks(headlines: dict[str, float], refs: dict[str, Any]) -> dict[str, Any]:
    """Each headline on the subset against the references, in points (paired: same images)."""
    checks = {}
    for attacks, accuracy in headlines.items():
        above_aa = accuracy - refs["autoattack"]["accuracy"]
        above_pgd = accuracy - refs["pgd50x3"]["accuracy"]
        checks[attacks] = {
            "accuracy": accuracy,
            "interval": list(wilson_interval(accuracy, refs["num_samples"])),
            "above_autoattack": above_aa,
            "above_pgd50x3": above_pgd,
            "above_worst_of_both": accuracy - refs["worst_of_both"]["accuracy"],
            "within_noise": above_aa <= MAX_GAP + 1e-9 and above_pgd <= MAX_GAP + 1e-9,
        }
    return checks


def measure_state(
    model: nn.Module, case: Case, settings: Sequence[Setting], *, state: str, device: str
) -> dict[str, Any]:
    """One model (the upload or the hardened one): each setting's evaluation as the job runs
    it, then the headlines and the references on the strength subset."""
    evaluations = {}
    for setting in settings:
        samples = case.samples(setting, epochs=case.epochs, train_attack_steps=case.threat.steps)
        evaluations[setting.label] = record = run_setting(
            model, case, setting, max_samples=samples, device=device
        )
        log(
            f"{case.name} {state}: {setting.label} ({record['num_samples']} images): clean "
            f"{record['clean_accuracy']:.3f} robust {record['robust_accuracy']:.3f} in "
            f"{record['seconds']:.0f} s, {record['forward_passes']} passes"
        )
    on_subset: dict[str, dict[str, Any]] = {}
    headlines = {}
    for setting in settings:
        if setting.attack == "fast" or setting.attacks in on_subset:
            continue  # fast's PGD-k is the ensemble's first stage: read there
        on_subset[setting.attacks] = record = run_setting(
            model, case, setting, max_samples=case.strength_samples, device=device,
            headline_only=True,
        )  # fmt: skip
        headlines[setting.attacks] = record["robust_accuracy"]
        if setting is settings[0]:
            fast = dataclasses.replace(setting, attack="fast")
            headlines[fast.attacks] = record["pgd_accuracy"]
    refs = references(model, case, device=device)
    for record in [*evaluations.values(), *on_subset.values()]:
        indices = record.pop("subset_indices")  # kept once, with the references
        if record["headline_only"]:
            assert indices == refs["subset_indices"], "not the subset evaluate() took"
    log(
        f"{case.name} {state}: on {refs['num_samples']}: headline "
        f"{headlines[settings[0].attacks]:.3f}, PGD-50x3 {refs['pgd50x3']['accuracy']:.3f} "
        f"({refs['pgd50x3']['seconds']:.0f} s), AutoAttack {refs['autoattack']['accuracy']:.3f} "
        f"({refs['autoattack']['seconds']:.0f} s)"
    )
    return {
        "evaluations": evaluations,
        "on_subset": on_subset,
        "references": refs,
        "strength": strength_checks(headlines, refs),
    }


def cost_ratios(
    case: Case, training: dict[str, Any], states: dict[str, Any], settings: Sequence[Setting]
) -> dict[str, Any]:
    """Per setting: (before + after) evaluation over training, in seconds and passes, on the
    measured job and on a 10-epoch PGD-10 job on the same data; passes per image against
    core.service.jobs.eval_budget's bound; the largest max_samples within 0.3x of each job."""
    job = training["default_job"]
    ratios = {}
    for setting in settings:
        runs = {state: states[state]["evaluations"][setting.label] for state in STATES}
        seconds = sum(r["seconds"] for r in runs.values())
        passes = sum(r["forward_passes"] for r in runs.values())
        per_image = {state: r["forward_passes"] / r["num_samples"] for state, r in runs.items()}
        both = sum(per_image.values())
        job_samples = case.samples(
            setting, epochs=DEFAULT_JOB_EPOCHS, train_attack_steps=DEFAULT_JOB_ATTACK_STEPS
        )
        # Passes per image scale about linearly with the images (the sanity checks' fixed
        # subset does not, so a larger evaluation costs a little less per image than this).
        ratios[setting.label] = {
            "num_samples": runs["before"]["num_samples"],
            "eval_seconds": seconds,
            "eval_passes": passes,
            "passes_per_image": per_image,
            "budget_bound_per_image": (
                passes_per_image(setting.attack_steps) if setting.attack == "standard" else None
            ),
            "headline_share_of_seconds": sum(r["headline_seconds"] for r in runs.values())
            / seconds,
            "ratio_seconds": seconds / training["seconds"],
            "ratio_passes": passes / training["passes"],
            "max_samples_within_ratio": int(MAX_COST_RATIO * training["passes"] / both),
            "default_job_samples": job_samples,
            "ratio_passes_default_job": both * job_samples / job["passes"],
            "max_samples_within_ratio_default_job": int(MAX_COST_RATIO * job["passes"] / both),
        }
    return ratios


def run_case(case: Case, settings: Sequence[Setting], *, device: str) -> dict[str, Any]:
    started = time.perf_counter()
    clean, pretrain_seconds = case.pretrained()
    log(f"{case.name}: pretrained ({pretrain_seconds:.0f} s when trained); hardening")
    hardened, training = harden(case, clean, device=device)
    log(
        f"{case.name}: hardened in {training['seconds']:.0f} s, {training['passes']} passes "
        f"(best epoch {training['best_epoch']})"
    )
    states = {
        state: measure_state(model, case, settings, state=state, device=device)
        for state, model in zip(STATES, (clean, hardened), strict=True)
    }
    return {
        "data": case.data,
        "threat": dataclasses.asdict(case.threat),
        "pretrain_seconds": pretrain_seconds,
        "training": training,
        "states": states,
        "cost": cost_ratios(case, training, states, settings),
        "seconds": time.perf_counter() - started,
    }
