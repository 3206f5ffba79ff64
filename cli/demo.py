"""`robustify demo`: the whole product in one run on the bundled digits data.

It plays both sides: the user (train a small classifier, save it), and the service (load the
file as an upload, harden it, evaluate before and after, hand back a file of the same format).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from core.robust import (
    EvalReport,
    FinetuneConfig,
    ThreatModel,
    adversarial_finetune,
    evaluate,
    load_dataset,
    load_model,
    save_model,
)
from core.robust.architectures import build_architecture
from core.robust.modelio import model_from_module
from core.robust.pretrain import train_clean

ARCHITECTURE = "builtin:digits_cnn"
INPUT_SHAPE = (1, 8, 8)
# At 0.2 a clean digits CNN is almost always fooled: the setting where hardening shows.
EPSILON = 0.2


@dataclass(frozen=True)
class DemoResult:
    before: EvalReport
    after: EvalReport
    uploaded: Path
    hardened: Path


def run_demo(
    output_dir: Path, *, epochs: int = 10, seed: int = 0, console: Console | None = None
) -> DemoResult:
    """Train, save, load as an upload, harden, evaluate, save; print what happened."""
    console = console or Console()
    output_dir.mkdir(parents=True, exist_ok=True)
    data = load_dataset("builtin:digits")
    threat = ThreatModel(norm="linf", epsilon=EPSILON, steps=7)

    console.print(
        f"[bold]1.[/] Training a clean {ARCHITECTURE} on builtin:digits "
        f"({len(data.train)} train / {len(data.test)} test images)"
    )
    torch.manual_seed(seed)
    net = build_architecture(ARCHITECTURE, input_shape=INPUT_SHAPE, num_classes=10)
    net = train_clean(net, data.train, seed=seed, device="cpu")
    uploaded = output_dir / "digits-cnn.pt"
    save_model(
        model_from_module(net, input_shape=INPUT_SHAPE, num_classes=10, architecture=ARCHITECTURE),
        uploaded,
    )

    console.print(f"[bold]2.[/] Loading {uploaded} as an upload would be loaded (weights only)")
    model = load_model(uploaded, input_shape=INPUT_SHAPE, num_classes=10, architecture=ARCHITECTURE)
    before = evaluate(model, data.test, threat, attack_steps=20, device="cpu")

    console.print(
        f"[bold]3.[/] Adversarial fine-tuning, slow start / fast decay, "
        f"Linf epsilon {EPSILON}, {epochs} epochs"
    )
    started = time.perf_counter()
    result = adversarial_finetune(
        model,
        data.train,
        threat,
        FinetuneConfig(epochs=epochs, seed=seed),
        val=data.test,
        device="cpu",
        on_epoch=lambda m, _checkpoint: console.print(
            f"   epoch {m.epoch:2d}  loss {m.train_loss:.3f}  lr {m.lr:.4f}  "
            f"val clean {m.val_clean_accuracy:.3f}  val PGD-10 {m.val_robust_accuracy:.3f}"
        ),
    )
    console.print(
        f"   done in {time.perf_counter() - started:.1f} s; best epoch {result.best_epoch}"
    )
    after = evaluate(result.model, data.test, threat, attack_steps=20, device="cpu")
    hardened = output_dir / "digits-cnn-robust.pt"
    save_model(result.model, hardened)

    console.print(comparison_table(before, after))
    for warning in after.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(
        f"Uploaded model: {uploaded}\nHardened model (same format, same input): {hardened}"
    )
    return DemoResult(before=before, after=after, uploaded=uploaded, hardened=hardened)


def comparison_table(before: EvalReport, after: EvalReport) -> Table:
    table = Table(title=f"builtin:digits test set ({after.num_samples} images)")
    table.add_column("accuracy")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("clean", f"{before.clean_accuracy:.1%}", f"{after.clean_accuracy:.1%}")
    table.add_row(
        f"PGD-{after.attack_steps} (eps {after.threat.epsilon:g})",
        f"{before.robust_accuracy:.1%}",
        f"{after.robust_accuracy:.1%}",
    )
    for epsilon, accuracy in after.accuracy_by_epsilon.items():
        if epsilon in (0.0, after.threat.epsilon):
            continue
        table.add_row(
            f"PGD-{after.attack_steps} at eps {epsilon:g}",
            f"{before.accuracy_by_epsilon[epsilon]:.1%}",
            f"{accuracy:.1%}",
        )
    return table
