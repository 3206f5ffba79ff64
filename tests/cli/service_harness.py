"""For the tests of the SDK and of the commands that use the service: a running `robustify up`
with an API key, the `robustify` command pointed at it, and digits model files."""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from cli.embedded import EmbeddedService
from cli.processes import robustify_argv
from core.robust import ThreatModel, evaluate, load_model, save_model
from core.robust.datasets.loading import DatasetSplits
from core.robust.models.modelio import model_from_module
from robustify import Client

DIGITS_INPUT = (1, 8, 8)
DIGITS_UPLOAD_OPTIONS = (
    "--input-shape", "1,8,8", "--num-classes", "10", "--architecture", "builtin:digits_cnn",
)  # fmt: skip


@dataclass(frozen=True)
class RunningService:
    """`robustify up` with a data dir of its own, and an API key of owner "tests"."""

    service: EmbeddedService
    api_key: str

    @property
    def url(self) -> str:
        return self.service.url

    def client(self, api_key: str | None = None) -> Client:
        return Client(self.url, api_key or self.api_key, timeout=120)

    def run(self, *args: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
        """`robustify ARGS...` as a subprocess, pointed at this service by the environment."""
        env = {
            name: value for name, value in os.environ.items() if not name.startswith("ROBUSTIFY_")
        }
        env.update(ROBUSTIFY_URL=self.url, ROBUSTIFY_API_KEY=api_key or self.api_key)
        return subprocess.run(
            robustify_argv(*args), env=env, capture_output=True, text=True, timeout=300, check=False
        )


def save_digits_model(net: nn.Module, path: Path) -> Path:
    """`net` as a user uploads it: a state_dict of builtin:digits_cnn."""
    model = model_from_module(
        copy.deepcopy(net),
        architecture="builtin:digits_cnn",
        input_shape=DIGITS_INPUT,
        num_classes=10,
    )
    save_model(model, path)
    return path


def pgd_accuracy(path: Path, digits: DatasetSplits) -> float:
    """PGD-20 accuracy at Linf 0.2 of a digits model file, measured here, on 200 test images."""
    model = load_model(
        path, input_shape=DIGITS_INPUT, num_classes=10, architecture="builtin:digits_cnn"
    )
    report = evaluate(
        model,
        digits.test,
        ThreatModel(norm="linf", epsilon=0.2),
        attack="fast",  # PGD-20 alone, as the name says
        attack_steps=20,
        max_samples=200,
        seed=7,
        sanity_checks=False,
        device="cpu",
    )
    return report.robust_accuracy
