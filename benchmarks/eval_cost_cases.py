"""The eval_cost benchmark's cases and settings: the evaluation settings it compares (the
job's defaults and the candidates), and the models it hardens (the digits CNN, the zoo's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from benchmarks.common import digits_setup, pretrained_digits_cnn
from benchmarks.zoo_models import NUM_CLASSES, SIZES
from benchmarks.zoo_runs import make_setup
from benchmarks.zoo_runs import pretrained_model as zoo_pretrained_model
from core.robust.datasets.loading import ImageDataset
from core.robust.finetune import FinetuneConfig
from core.robust.threat import ThreatModel
from core.service.jobs.eval_budget import harden_evaluation_samples, training_passes
from core.service.jobs.jobconfig import EvaluationSettings

DIGITS = "digits_cnn"
DIGITS_EPOCHS = 10
DIGITS_PEAK_LR = 0.2  # benchmarks/schedules.py's choice for this CNN
ZOO_PEAK_LR = 0.02  # a fixed rate inside every zoo family's good range (README, zoo table)
# The strength subset: AutoAttack's Square spends 5,000 forward passes on every example it does
# not fool, minutes per hundred robust images on this CPU, so the zoo's is small.
ZOO_STRENGTH_SAMPLES = 50
DIGITS_STRENGTH_SAMPLES = 200
QUICK_STRENGTH_SAMPLES = 20
REFERENCE_PGD_STEPS = 50
REFERENCE_RESTARTS = 3
REFERENCE_SEED = 1  # not the headline's seed 0: the reference's random starts are its own
SEED = 0
BATCH_SIZE = 256
MAX_COST_RATIO = 0.3  # issue 9: both evaluations of a harden job <= 0.3x its training
MAX_GAP = 0.02  # the headline at most 2 points above AutoAttack's and PGD-50x3's
DEFAULT_JOB_EPOCHS = FinetuneConfig().epochs
DEFAULT_JOB_ATTACK_STEPS = ThreatModel(norm="linf", epsilon=8 / 255).steps
STATES = ("before", "after")
CANDIDATE_ATTACK_STEPS = (10, 20)  # beside the defaults' own


@dataclass(frozen=True)
class Setting:
    """One way to run evaluate(): the job's defaults or a candidate."""

    label: str
    attack: str
    attack_steps: int
    restarts: int
    max_samples: int | None  # None: as many as the harden job's budget pays for

    @property
    def attacks(self) -> str:
        """What decides the headline (the subset aside): the preset, its steps and restarts."""
        restarts = f" x{self.restarts}" if self.restarts > 1 else ""
        if self.attack == "fast":
            return f"fast (PGD-{self.attack_steps}{restarts})"
        return f"{self.attack}, {self.attack_steps} steps{restarts}"


def candidate_settings() -> list[Setting]:
    """The job's defaults first, then the candidates."""
    settings = EvaluationSettings()
    defaults = Setting(
        "defaults",
        settings.attack,
        settings.attack_steps,
        settings.restarts,
        settings.max_samples,
    )
    other_steps = [
        dataclasses.replace(defaults, label=f"{steps} steps", attack_steps=steps)
        for steps in CANDIDATE_ATTACK_STEPS
        if steps != defaults.attack_steps
    ]
    return [
        defaults,
        dataclasses.replace(defaults, label="max_samples 1000", max_samples=1000),
        *other_steps,
        dataclasses.replace(defaults, label="fast", attack="fast"),
    ]


@dataclass(frozen=True)
class Case:
    """One model of the benchmark: its data, threat, pretrained weights and hardening."""

    name: str
    data: str
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    threat: ThreatModel  # epsilon and the training attack's steps
    num_classes: int
    epochs: int
    peak_lr: float
    strength_samples: int
    pretrained: Callable[[], tuple[nn.Module, float]]

    def budget_training(self, *, epochs: int, train_attack_steps: int) -> int:
        """The training passes core.service.jobs.eval_budget sizes a harden job's evaluation by,
        computed as core/service/engine/process.py computes them for this data."""
        config = FinetuneConfig()
        return training_passes(
            train_images=len(self.train),
            epochs=epochs,
            train_attack_steps=train_attack_steps,
            val_images=min(len(self.val), config.val_max_samples),
            val_steps=config.val_attack_steps,
        )

    def samples(self, setting: Setting, *, epochs: int, train_attack_steps: int) -> int:
        """The test images `setting` evaluates in a harden job of `epochs` x PGD-k here."""
        wanted = setting.max_samples
        if wanted is None:
            training = self.budget_training(epochs=epochs, train_attack_steps=train_attack_steps)
            wanted = harden_evaluation_samples(training=training, attack_steps=setting.attack_steps)
        return min(wanted, len(self.test))


def digits_case(*, strength_samples: int) -> Case:
    setup = digits_setup()

    def pretrained() -> tuple[nn.Module, float]:
        made = pretrained_digits_cnn(SEED)
        return made.model.eval(), made.seconds

    return Case(
        DIGITS, "builtin:digits 8x8", setup.train, setup.val, setup.test, setup.threat,
        setup.num_classes, DIGITS_EPOCHS, DIGITS_PEAK_LR, strength_samples, pretrained,
    )  # fmt: skip


def zoo_case(name: str, *, size_name: str, strength_samples: int, device: str) -> Case:
    size = SIZES[size_name]
    setup = make_setup(size)

    def pretrained() -> tuple[nn.Module, float]:
        model, seconds = zoo_pretrained_model(name, setup, size, seed=SEED, device=device)
        return model.eval(), seconds

    return Case(
        name, "builtin:digits32 3x32x32", setup.train, setup.val, setup.test, setup.threat,
        NUM_CLASSES, size.harden_epochs, ZOO_PEAK_LR, strength_samples, pretrained,
    )  # fmt: skip
