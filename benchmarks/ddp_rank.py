"""One rank of benchmarks/ddp.py's data-parallel fine-tuning:

    torchrun --standalone --nproc-per-node N -m benchmarks.ddp_rank --out FILE [--device cuda]

Every rank runs the engine's `adversarial_finetune` (core.robust.distributed splits each global
batch and averages the gradients); rank 0 times the steps (the engine calls on_batch on rank 0
only; a step there ends after the gradients' all-reduce, so its rate is the whole group's) and
writes FILE as JSON, with the CPU seconds of all ranks over the whole fine-tuning call.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from benchmarks.common import set_threads
from core.robust.datasets.digits import load_digits32
from core.robust.distributed import start_process_group
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.models.architectures import build_architecture
from core.robust.threat import ThreatModel

ARCHITECTURE = "builtin:small_cnn"
BATCH_SIZE = 128  # the global batch, whatever the number of processes
EPSILON, STEP_SIZE = 8 / 255, 2 / 255


def join_group(device: torch.device, world_size: int) -> str:
    """Join torchrun's group: the engine's own edge (nccl between GPUs, gloo on the CPU), or
    gloo when several ranks share one GPU (nccl refuses two ranks on the same device)."""
    if device.type == "cuda" and world_size > torch.cuda.device_count():
        torch.cuda.set_device(device)
        dist.init_process_group(backend="gloo")
        return "gloo"
    start_process_group(device)
    return "nccl" if device.type == "cuda" else "gloo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--images", type=int, default=1280, help="digits32 training images")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--attack-steps", type=int, default=3)
    args = parser.parse_args()
    set_threads(args.threads)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    else:
        device = torch.device("cpu")
    backend = join_group(device, world_size) if world_size > 1 else None
    rank = dist.get_rank() if dist.is_initialized() else 0

    train = load_digits32().train.subset(torch.arange(args.images))
    threat = ThreatModel(norm="linf", epsilon=EPSILON, step_size=STEP_SIZE, steps=args.attack_steps)
    config = FinetuneConfig(
        epochs=args.epochs, batch_size=BATCH_SIZE, peak_lr=0.05, seed=0, weight_interpolation=False
    )
    torch.manual_seed(0)
    model = build_architecture(ARCHITECTURE, input_shape=(3, 32, 32), num_classes=10)
    step_ends: list[float] = []

    def on_batch(_epoch: int, _step: int, _steps: int, _loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_ends.append(time.perf_counter())

    if dist.is_initialized():
        dist.barrier()
    started, cpu_started = time.perf_counter(), time.process_time()
    result = adversarial_finetune(model, train, threat, config, on_batch=on_batch, device=device)
    seconds = time.perf_counter() - started
    # CPU seconds of every rank (all its threads): on a shared machine the wall rate moves with
    # the share of the cores the scheduler gives; the work per image does not.
    cpu_seconds = torch.tensor([time.process_time() - cpu_started], dtype=torch.float64)
    if dist.is_initialized():
        cpu_seconds = cpu_seconds.to(device)
        dist.all_reduce(cpu_seconds)
    if rank == 0:
        steps = len(step_ends)
        # From the first step's end to the last's: the steady rate, without the first step's
        # one-off costs (allocations, DDP's first bucket build, cudnn's choices).
        steady = (steps - 1) * BATCH_SIZE / (step_ends[-1] - step_ends[0])
        summary = {
            "world_size": world_size,
            "threads_per_process": args.threads,
            "device": str(device),
            "backend": backend,
            "train_images": len(train),
            "epochs": args.epochs,
            "steps": steps,
            "images_per_second": steady,
            "finetune_seconds": seconds,
            "finetune_cpu_seconds_all_ranks": float(cpu_seconds.item()),
            "images_per_cpu_second": args.epochs * len(train) / float(cpu_seconds.item()),
            "train_loss": result.history[-1].train_loss,
        }
        args.out.write_text(json.dumps(summary, indent=1))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
