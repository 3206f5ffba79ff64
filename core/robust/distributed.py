"""Data-parallel fine-tuning across the processes of a torch.distributed group (torchrun).

One fine-tuning run, N processes: each rank takes its share of every global batch of the
single-process run's seeded order, attacks it on its own (PGD needs no synchronisation), and
DistributedDataParallel averages the update's gradients, so every rank holds the same weights.
`Ranks` is the run's view of the group; with one process every method is a no-op, so the
training loop calls it unconditionally.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.robust.datasets.splits import TrainingImages
from core.robust.errors import InvalidConfig

__all__ = [
    "DataParallelForward",
    "Ranks",
    "Shard",
    "backend_for",
    "start_process_group",
]


def backend_for(device: torch.device) -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def start_process_group(device: torch.device, *, timeout_seconds: float = 600.0) -> None:
    """Join the group torchrun described in this process's environment (env:// rendezvous),
    with the backend the device needs. Called once, at the edge (the engine's process)."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend_for(device), timeout=datetime.timedelta(seconds=timeout_seconds)
    )


@dataclass(frozen=True)
class Shard:
    """A rank's share of a global batch. `count` real examples; when the batch had fewer
    examples than ranks, a rank without one gets a stand-in example (count 0, weight 0) so
    that it still joins the gradient all-reduce. `weight` rescales the rank's mean loss so
    that DDP's average over ranks is the mean over the whole global batch."""

    images: torch.Tensor
    labels: torch.Tensor
    count: int
    weight: float


class DataParallelForward(nn.Module):
    """The model as the update's step sees it: training-mode forwards with gradients go
    through DistributedDataParallel (whose backward all-reduces the gradients); every other
    forward (the attack's, which runs in eval mode, and any no_grad pass) goes to the plain
    module. PGD's inner gradient passes differentiate with respect to the input only: through
    DDP they would prepare a reduction that never comes, and they need no synchronisation."""

    def __init__(self, ddp: DistributedDataParallel) -> None:
        super().__init__()
        self.ddp = ddp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return self.ddp(x)
        return self.ddp.module(x)


class Ranks:
    """This process's place in the run's process group (rank, world size, the device its
    collectives use), and the few collectives the run needs."""

    def __init__(self, *, rank: int = 0, world_size: int = 1, device: torch.device) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device

    @classmethod
    def of_process_group(cls, device: torch.device) -> Ranks:
        """The initialised default group's ranks, else a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
        return cls(device=device)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        """Rank 0: the one that reports progress and writes checkpoints."""
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise InvalidConfig(
                f"batch_size {batch_size} is the global batch: it must be divisible by the "
                f"world size {self.world_size}"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model the update's forward and backward go through (DDP across ranks).

        broadcast_buffers stays on: each DDP forward starts from rank 0's BatchNorm running
        statistics. BatchNorm still normalises by each rank's own shard (no SyncBatchNorm:
        the shards are i.i.d. draws of the same batch, and a sync per layer per forward would
        cost more than it gives at these batch sizes)."""
        if not self.distributed:
            return model
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DataParallelForward(DistributedDataParallel(model, device_ids=device_ids))

    def shard(self, images: torch.Tensor, labels: torch.Tensor) -> Shard:
        """This rank's share of a global batch: every world_size-th example from its rank on,
        as DistributedSampler splits an order."""
        total = len(labels)
        if not self.distributed:
            return Shard(images, labels, count=total, weight=1.0)
        mine = slice(self.rank, None, self.world_size)
        count = len(labels[mine])
        if count == 0:
            return Shard(images[:1], labels[:1], count=0, weight=0.0)
        return Shard(
            images[mine], labels[mine], count=count, weight=count * self.world_size / total
        )

    def shard_dataset(self, dataset: TrainingImages) -> TrainingImages:
        """This rank's share of a dataset (the validation subset each rank scores part of)."""
        if not self.distributed:
            return dataset
        return dataset.subset(torch.arange(self.rank, len(dataset), self.world_size))

    def sums(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the ranks (the same answer on every rank)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return [float(value) for value in tensor.cpu()]

    def mean(self, value: float, count: int) -> float:
        """The mean over all ranks of a per-rank mean `value` over `count` examples."""
        if not self.distributed:
            return value
        # A stand-in example (count 0) may carry a non-finite value: it must weigh nothing.
        total, examples = self.sums([value * count if count else 0.0, float(count)])
        return total / max(examples, 1.0)

    def means(self, values: Sequence[float], count: int) -> list[float]:
        """Per-rank means (accuracies over `count` examples) as means over every rank's."""
        if not self.distributed:
            return list(values)
        *totals, examples = self.sums([value * count for value in values] + [float(count)])
        return [total / max(examples, 1.0) for total in totals]

    def broadcast_float(self, value: float) -> float:
        """Rank 0's value on every rank (a choice that must be the same everywhere)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: after an epoch
        each rank's moved by its own last forward; the validation, the best weights and the
        checkpoint must see one model."""
        if not self.distributed:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer.data, src=0)

    def agreed(self, should_stop: Callable[[], bool] | None) -> Callable[[], bool] | None:
        """should_stop as every rank must see it: rank 0 asks (only it talks to whoever
        decides), the others take its answer, so that all ranks stop at the same batch."""
        if not self.distributed:
            return should_stop
        leader_asks = should_stop if self.is_leader else None

        def agreed_answer() -> bool:
            asked = leader_asks() if leader_asks is not None else False
            return self.broadcast_float(1.0 if asked else 0.0) > 0.5

        return agreed_answer

    def gather_states(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's generator state (a CPU byte tensor), in rank order."""
        if not self.distributed:
            return [state]
        states: list[object] = [None] * self.world_size
        dist.all_gather_object(states, state.cpu())
        return [s for s in states if isinstance(s, torch.Tensor)]
