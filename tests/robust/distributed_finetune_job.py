"""One rank of a data-parallel fine-tuning run on digits, for tests/robust/test_distributed.py:
`torchrun --standalone --nproc-per-node N -m distributed_finetune_job --model M --out DIR`.

Every rank fine-tunes (core.robust.distributed does the splitting and the syncing); rank 0's
on_epoch saves the checkpoint; every rank saves its final weights, rank 0 the run's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from core.robust.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from core.robust.datasets.loading import load_digits
from core.robust.datasets.splits import with_validation
from core.robust.distributed import start_process_group
from core.robust.finetune import EpochMetrics, FinetuneConfig, adversarial_finetune
from core.robust.measure import clean_and_robust
from core.robust.threat import ThreatModel

# At 0.1 two epochs on digits land within a few points of each other from seed to seed (at 0.2
# the same runs spread over 15 points of robust accuracy: too noisy to compare runs).
THREAT = ThreatModel(norm="linf", epsilon=0.1, steps=7)
TEST_ATTACK = THREAT.with_steps(20)


def make_bn_digits_cnn() -> nn.Module:
    """The digits CNN with a BatchNorm layer: its running statistics must end the same on every
    rank too."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def run_config(epochs: int, *, probe: bool = False) -> FinetuneConfig:
    # A fixed rate (no probe) unless `probe`, guards on: the run a job makes, short.
    return FinetuneConfig(
        epochs=epochs, batch_size=64, peak_lr=None if probe else 0.05, seed=0, val_max_samples=300
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--resume", type=Path)
    # Sleep after this epoch's checkpoint, so that a test can kill the run mid-way for sure.
    parser.add_argument("--pause-after-epoch", type=int, default=0)
    # The learning rate chosen by the probe (the job's default) instead of the fixed one.
    parser.add_argument("--probe", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        start_process_group(device, timeout_seconds=120)
    rank = dist.get_rank() if dist.is_initialized() else 0
    digits = with_validation(load_digits(), fraction=0.2, seed=0)
    model = make_bn_digits_cnn()
    model.load_state_dict(torch.load(args.model, weights_only=True))

    def on_epoch(metrics: EpochMetrics, checkpoint: Checkpoint) -> None:
        save_checkpoint(checkpoint, args.out / "checkpoint.pt")
        if metrics.epoch == args.pause_after_epoch:
            (args.out / "paused").touch()
            time.sleep(300)

    config = run_config(args.epochs, probe=args.probe)
    result = adversarial_finetune(
        model, digits.train, THREAT, config, val=digits.val, device=device,
        on_epoch=on_epoch, resume=load_checkpoint(args.resume) if args.resume else None,
    )  # fmt: skip
    torch.save(result.model.state_dict(), args.out / f"weights_rank{rank}.pt")
    if rank == 0:
        clean, robust = clean_and_robust(
            result.model, digits.test, TEST_ATTACK, seed=7, batch_size=360, device=device
        )
        summary = {
            "test_clean_accuracy": clean,
            "test_robust_accuracy": robust,
            "best_epoch": result.best_epoch,
            "peak_lr": result.peak_lr,
            "history": [vars(metrics) for metrics in result.history],
        }
        (args.out / "result.json").write_text(json.dumps(summary, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
