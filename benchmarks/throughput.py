"""Adversarial fine-tuning throughput (images per second) of resnet18 at 3x32x32, side by side.

One model (torchvision resnet18, num_classes=10, random init: only the timing means something),
one random 3x32x32 training set of `--batches` x 128 images, one device, PGD-10 (Linf, eps 8/255,
step 2/255, random start) and an SGD step (momentum 0.9, weight decay 5e-4) per batch:
- robustify: the engine's own loop (`adversarial_finetune`; guards, validation and the epsilon
  ramp-up off) in fp32, with cudnn.benchmark, AMP (bf16 where the GPU has it, else fp16 with a
  GradScaler), channels_last, AMP + channels_last (the CUDA defaults), and torch.compile'd. Two
  epochs; the second is timed (the first pays for cudnn's search and the compilation).
- torchattacks: a plain loop over `torchattacks.PGD` and the same SGD step, after a warm-up batch.
- ART: `AdversarialTrainerMadryPGD` over a `PyTorchClassifier` (numpy in and out, as ART works;
  its PGD, built by the trainer with its default batch of 32, also runs extra forward passes to
  log its success rate), after a warm-up batch.
Each method runs `--rounds` times, round-robin in a rotating order; the median round is kept.
On a machine without CUDA, the rows that need it say "n/a (no CUDA)".
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from benchmarks.common import base_parser, log, markdown_table, set_threads, write_results
from core.robust.datasets.splits import ImageDataset
from core.robust.finetune import FinetuneConfig, adversarial_finetune
from core.robust.finetune_config import Precision
from core.robust.precision import resolve_speed
from core.robust.threat import ThreatModel

BATCH_SIZE = 128
STEPS = 10
EPSILON = 8 / 255
STEP_SIZE = 2 / 255
LR = 0.01
THREAT = ThreatModel(norm="linf", epsilon=EPSILON, steps=STEPS, step_size=STEP_SIZE)
NO_CUDA = "n/a (no CUDA)"


@dataclass(frozen=True)
class EngineSetting:
    name: str
    precision: Precision | Literal["amp"]
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool = False
    needs_cuda: bool = False


# "amp": bf16 where the GPU has it, else fp16 (what "auto" picks for large images).
ENGINE_SETTINGS = [
    EngineSetting("robustify fp32", "fp32", False, False),
    EngineSetting("robustify fp32 + cudnn.benchmark", "fp32", False, True, needs_cuda=True),
    EngineSetting("robustify AMP", "amp", False, True, needs_cuda=True),
    EngineSetting(
        "robustify channels_last (the defaults up to 128 px)", "fp32", True, True, needs_cuda=True
    ),
    EngineSetting("robustify AMP + channels_last", "amp", True, True, needs_cuda=True),
    # The defaults for these 32-px images: fp32 and channels_last on a GPU, plain fp32 on the
    # CPU. Compiled, that is what runs.
    EngineSetting("robustify defaults + torch.compile", "auto", True, True, compile=True),
]


def amp_precision() -> Precision:
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def fresh_resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def training_set(batches: int, *, image_size: int = 32) -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((batches * BATCH_SIZE, 3, image_size, image_size), generator=generator)
    return ImageDataset(images, torch.randint(0, 10, (len(images),), generator=generator))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_images_per_second(
    setting: EngineSetting, train: ImageDataset, device: torch.device
) -> dict[str, Any]:
    config = FinetuneConfig(
        epochs=2,
        batch_size=BATCH_SIZE,
        peak_lr=LR,
        guards=False,
        epsilon_rampup_fraction=0.0,
        weight_interpolation=False,
        precision=amp_precision() if setting.precision == "amp" else setting.precision,
        channels_last=setting.channels_last and device.type == "cuda",
        cudnn_benchmark=setting.cudnn_benchmark,
        compile=setting.compile,
    )
    speed = resolve_speed(
        device,
        precision=config.precision,
        channels_last=config.channels_last,
        cudnn_benchmark=config.cudnn_benchmark,
        compile=config.compile,
        image_size=train.input_shape[1:],
    )
    cpu_clock: list[float] = []  # at each epoch's end
    result = adversarial_finetune(
        fresh_resnet18(), train, THREAT, config, device=device,
        on_epoch=lambda metrics, checkpoint: cpu_clock.append(time.process_time()),
    )  # fmt: skip
    first, second = result.history
    seconds = second.train_seconds - first.train_seconds
    return {
        "images_per_second": len(train) / seconds,
        "seconds": seconds,
        "cpu_seconds": cpu_clock[1] - cpu_clock[0],
        "first_epoch_seconds": first.train_seconds,
        "resolved": {
            "precision": speed.precision,
            "channels_last": speed.channels_last,
            "cudnn_benchmark": speed.cudnn_benchmark,
            "compile": speed.compile,
        },
    }


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)


def timed_loop(
    step: Callable[[int], None], batches: int, device: torch.device
) -> tuple[float, float]:
    """Wall and CPU seconds for `batches` calls of step(batch index), after a warm-up call."""
    step(0)
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    for index in range(batches):
        step(index)
    synchronize(device)
    return time.perf_counter() - started, time.process_time() - cpu_started


def torchattacks_images_per_second(train: ImageDataset, device: torch.device) -> dict[str, Any]:
    import torchattacks

    model = fresh_resnet18().to(device)
    optimizer = sgd(model)
    attack = torchattacks.PGD(model, eps=EPSILON, alpha=STEP_SIZE, steps=STEPS, random_start=True)
    batches = len(train) // BATCH_SIZE

    def step(index: int) -> None:
        rows = torch.arange(index * BATCH_SIZE, (index + 1) * BATCH_SIZE)
        x, labels = (t.to(device) for t in train.batch(rows))
        x_adv = attack(x, labels)
        model.train()
        loss = F.cross_entropy(model(x_adv), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds, cpu_seconds = timed_loop(step, batches, device)
    return {
        "images_per_second": len(train) / seconds,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }


def art_images_per_second(train: ImageDataset, device: torch.device) -> dict[str, Any]:
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    model = fresh_resnet18()
    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        optimizer=sgd(model),
        input_shape=(3, 32, 32),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    trainer = AdversarialTrainerMadryPGD(
        classifier,
        nb_epochs=1,
        batch_size=BATCH_SIZE,
        eps=EPSILON,
        eps_step=STEP_SIZE,
        max_iter=STEPS,
        num_random_init=1,
    )
    x, labels = train.tensors(len(train))
    x_np, labels_np = x.numpy(), labels.numpy()
    trainer.fit(x_np[:BATCH_SIZE], labels_np[:BATCH_SIZE])  # warm-up
    synchronize(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.fit(x_np, labels_np)
    synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "images_per_second": len(train) / seconds,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Any]]:
    """Every method `args.rounds` times, round-robin in a rotating order (other work on the
    machine then weighs on each alike); each reports its median round."""
    train = training_set(args.batches)
    results: dict[str, dict[str, Any]] = {}
    methods: dict[str, Callable[[], dict[str, Any]]] = {}
    for setting in ENGINE_SETTINGS:
        if setting.needs_cuda and device.type != "cuda":
            results[setting.name] = {"images_per_second": None, "note": NO_CUDA}
        elif setting.compile and args.no_compile:
            results[setting.name] = {"images_per_second": None, "note": "skipped (--no-compile)"}
        else:
            methods[setting.name] = functools.partial(
                engine_images_per_second, setting, train, device
            )
    methods["torchattacks PGD loop"] = lambda: torchattacks_images_per_second(train, device)
    methods["ART AdversarialTrainerMadryPGD"] = lambda: art_images_per_second(train, device)
    names = list(methods)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        rotation = round_index % len(names)
        for name in names[rotation:] + names[:rotation]:
            log(f"round {round_index + 1}/{args.rounds}: {name} ...")
            rounds[name].append(methods[name]())
    for name in names:
        median = sorted(rounds[name], key=lambda r: r["images_per_second"])[len(rounds[name]) // 2]
        results[name] = {**median, "rounds": rounds[name]}
    return {name: results[name] for name in [s.name for s in ENGINE_SETTINGS] + names[-2:]}


def rate_table(results: dict[str, dict[str, Any]], *, cpu_time: bool) -> str:
    """Images per second and the ratio to robustify's fp32; on the CPU also the ratio of CPU
    seconds, which moves less than the wall clock on a machine shared with other work."""
    fp32 = results["robustify fp32"]
    rows = []
    for name, result in results.items():
        rate = result["images_per_second"]
        if rate is None:
            row = [name, result["note"], "—", "—"]
        else:
            cpu_ratio = fp32["cpu_seconds"] / result["cpu_seconds"]
            row = [
                name,
                f"{rate:.1f}",
                f"{rate / fp32['images_per_second']:.2f}x",
                f"{cpu_ratio:.2f}x",
            ]
        rows.append(row if cpu_time else row[:3])
    headers = ["method", "images / s", "vs robustify fp32", "vs robustify fp32 (CPU time)"]
    return markdown_table(headers if cpu_time else headers[:3], rows)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="timed batches per method (default 20 on CUDA, 3 on the CPU; --quick 1)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds over every method, medians kept (3)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.batches is None:
        args.batches = 1 if args.quick else 20 if device.type == "cuda" else 3
    set_threads(args.threads)
    logging.getLogger("art").setLevel(logging.WARNING)
    started = time.perf_counter()
    results = measure(args, device)

    import art
    import torchattacks

    table = rate_table(results, cpu_time=device.type == "cpu")
    payload = {
        "device": device_description(device),
        "model": "torchvision resnet18 (num_classes=10), random init",
        "batch_size": BATCH_SIZE,
        "image_shape": [3, 32, 32],
        "attack": {"steps": STEPS, "epsilon": EPSILON, "step_size": STEP_SIZE, "norm": "linf"},
        "timed_images": args.batches * BATCH_SIZE,
        "rounds": args.rounds,
        "versions": {"torchattacks": torchattacks.__version__, "art": art.__version__},
        "bf16_supported": device.type == "cuda" and torch.cuda.is_bf16_supported(),
        "results": results,
    }
    name = "throughput" if device.type == "cpu" else f"throughput-{device.type}"
    write_results(name, payload, tables=[table], started=started, args=args)
    print(f"Device: {payload['device']}")


if __name__ == "__main__":
    main()
