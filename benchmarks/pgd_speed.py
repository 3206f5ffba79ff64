"""One PGD-10 adversarial training step (attack + SGD update), timed, against the floor and peers.

On a fixed model and batch (CPU), each method makes adversarial examples with PGD-10 (Linf,
random start, the same eps and step) and then takes the same SGD step (train mode,
cross-entropy on the adversarial batch, momentum 0.9, weight decay 5e-4):
- floor: the bare passes any PGD-10 step needs: 10 forward+backward passes for the input
  gradient (eval mode) + 1 forward+backward pass for the parameter gradient + the SGD step;
- robustify: `core.robust.attacks.pgd`;
- torchattacks.PGD(eps, alpha, steps=10, random_start=True);
- ART: ProjectedGradientDescentPyTorch(eps, eps_step, max_iter=10, num_random_init=1) through
  PyTorchClassifier (clip_values (0,1)); numpy in and out, as ART works. ART also runs two
  extra forward passes over the batch to log the attack's success rate.
The weights and optimizer state are reset before every step (outside the timing); the methods
are run round-robin, in a rotating order, after warm-up steps, and each reports the median.

Cases: builtin:small_cnn (BatchNorm) on a random 3x32x32 batch of 128 at eps 8/255, step 2/255
(CIFAR-like, random init: only the timing means something there), and builtin:digits_cnn,
clean-pretrained (benchmarks.common, seed 0), on 128 digits training images at eps 0.2, step
0.05, where the adversarial loss column also shows the three attacks are equally strong.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    base_parser,
    digits_setup,
    markdown_table,
    pretrained_digits_cnn,
    set_threads,
    write_results,
)
from core.robust.attacks import eval_mode, pgd
from core.robust.models.architectures import build_architecture
from core.robust.threat import ThreatModel

STEPS = 10
LR = 0.01


@dataclass(frozen=True)
class Case:
    name: str
    architecture: str
    x: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    epsilon: float
    step_size: float
    repeats: int
    pretrained: bool = False  # start from the clean-trained digits CNN of benchmarks.common


def make_cases(quick: bool) -> list[Case]:
    generator = torch.Generator().manual_seed(0)
    x_cifar = torch.rand((128, 3, 32, 32), generator=generator)
    y_cifar = torch.randint(0, 10, (128,), generator=generator)
    x_digits, y_digits = digits_setup().train.tensors(128)
    return [
        Case(
            "small_cnn, 128x3x32x32",
            "builtin:small_cnn",
            x_cifar,
            y_cifar,
            10,
            8 / 255,
            2 / 255,
            3 if quick else 9,
        ),
        Case(
            "digits_cnn, 128x1x8x8",
            "builtin:digits_cnn",
            x_digits,
            y_digits,
            10,
            0.2,
            0.05,
            5 if quick else 41,
            pretrained=True,
        ),
    ]


Step = Callable[[], torch.Tensor]  # one full training step; returns the adversarial batch


def build_methods(
    case: Case, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Step]:
    import torchattacks
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    x, labels = case.x, case.labels

    def update(x_adv: torch.Tensor) -> None:
        model.train()
        loss = F.cross_entropy(model(x_adv), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def floor() -> torch.Tensor:
        with eval_mode(model):
            for _ in range(STEPS):
                x_in = x.detach().requires_grad_(True)
                loss = F.cross_entropy(model(x_in), labels)
                torch.autograd.grad(loss, x_in)
        update(x)
        return x

    threat = ThreatModel(norm="linf", epsilon=case.epsilon, step_size=case.step_size, steps=STEPS)

    def ours() -> torch.Tensor:
        x_adv = pgd(model, x, labels, threat)
        update(x_adv)
        return x_adv

    attack_ta = torchattacks.PGD(
        model, eps=case.epsilon, alpha=case.step_size, steps=STEPS, random_start=True
    )

    def with_torchattacks() -> torch.Tensor:
        x_adv = attack_ta(x, labels)
        update(x_adv)
        return x_adv

    classifier = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=case.num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    attack_art = ProjectedGradientDescentPyTorch(
        classifier,
        norm=np.inf,
        eps=case.epsilon,
        eps_step=case.step_size,
        max_iter=STEPS,
        num_random_init=1,
        batch_size=len(x),
        verbose=False,
    )
    labels_np = labels.numpy()

    def with_art() -> torch.Tensor:
        x_adv = torch.from_numpy(attack_art.generate(x.numpy(), y=labels_np))
        update(x_adv)
        return x_adv

    return {
        "floor (11 fwd+bwd + step)": floor,
        "robustify pgd": ours,
        "torchattacks PGD": with_torchattacks,
        "ART PGD (PyTorchClassifier)": with_art,
    }


def run_case(case: Case, warmup: int) -> dict[str, Any]:
    if case.pretrained:
        model = pretrained_digits_cnn(0).model
    else:
        torch.manual_seed(0)
        channels, height, width = case.x.shape[1:]
        model = build_architecture(
            case.architecture, input_shape=(channels, height, width), num_classes=case.num_classes
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    methods = build_methods(case, model, optimizer)
    names = list(methods)

    def reset() -> None:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        model.train()

    # Sanity: every method's adversarial batch stays in the ball and in [0,1]; its loss on the
    # initial model (eval mode) shows the attacks are of similar strength.
    checks: dict[str, dict[str, float]] = {}
    for name in names[1:]:
        reset()
        x_adv = methods[name]()
        reset()
        with torch.no_grad(), eval_mode(model):
            adv_loss = F.cross_entropy(model(x_adv), case.labels).item()
            clean_loss = F.cross_entropy(model(case.x), case.labels).item()
        checks[name] = {
            "max_abs_perturbation": float((x_adv - case.x).abs().max()),
            "in_unit_box": bool(x_adv.min() >= 0 and x_adv.max() <= 1),
            "adversarial_loss": adv_loss,
            "clean_loss": clean_loss,
        }
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            reset()
            methods[name]()
    for repeat in range(case.repeats):
        rotation = repeat % len(names)
        for name in names[rotation:] + names[:rotation]:
            reset()
            started = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians[names[0]]
    return {
        "case": case.name,
        "architecture": case.architecture,
        "batch_shape": list(case.x.shape),
        "epsilon": case.epsilon,
        "step_size": case.step_size,
        "steps": STEPS,
        "repeats": case.repeats,
        "warmup": warmup,
        "median_seconds": medians,
        "ratio_to_floor": {name: medians[name] / floor for name in names},
        "times": times,
        "checks": checks,
    }


def main() -> None:
    parser = base_parser(__doc__ or "", seeds=None)
    args = parser.parse_args()
    set_threads(args.threads)
    logging.getLogger("art").setLevel(logging.WARNING)
    started = time.perf_counter()
    warmup = 1 if args.quick else 2
    cases = [run_case(case, warmup) for case in make_cases(args.quick)]

    import art
    import torchattacks

    rows = []
    for result in cases:
        for name, seconds in result["median_seconds"].items():
            check = result["checks"].get(name)
            rows.append(
                [
                    result["case"],
                    name,
                    f"{1000 * seconds:.1f}",
                    f"{result['ratio_to_floor'][name]:.2f}x",
                    "—" if check is None else f"{check['adversarial_loss']:.3f}",
                ]
            )
    table = markdown_table(
        [
            "model, batch",
            "method",
            "median ms / step",
            "vs floor",
            "adv. loss (initial model)",
        ],
        rows,
    )
    payload = {
        "versions": {"torchattacks": torchattacks.__version__, "art": art.__version__},
        "cases": cases,
    }
    write_results("pgd_speed", payload, tables=[table], started=started, args=args)
    print()
    for result in cases:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in result["ratio_to_floor"].items())
        print(f"{result['case']}: time / floor: {ratios}")


if __name__ == "__main__":
    main()
