"""The options `harden` and `evaluate` share, declared once: the model and dataset, the threat's
norm and radius and how the result is measured (option groups), the seed and --watch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import typer

from robustify import EvaluationOptions, ThreatModelOptions

THREAT = "Threat model"
TRAINING = "Fine-tuning"
EVALUATION = "Evaluation"

ModelArgument = Annotated[
    str,
    typer.Argument(
        help="A model file (uploaded first: give --input-shape and friends) or a model id (mdl_…).",
        show_default=False,
    ),
]
DatasetOption = Annotated[
    str, typer.Option(help="builtin:digits, builtin:cifar10 ..., or an uploaded ds_… id.")
]
SeedOption = Annotated[int | None, typer.Option(min=0, help="Random seed (default 0).")]
WatchOption = Annotated[
    bool, typer.Option("--watch", "-w", help="Follow the job live until it ends; show its results.")
]

# The service's presets (core.service.jobs.jobconfig.EVALUATION_ATTACKS; the CLI does not import
# the engine).
EvaluationAttack = Literal["fast", "standard", "autoattack"]
_EVAL_ATTACK_HELP = (
    "Attacks whose per-example worst case is the robust accuracy: fast (PGD alone), standard "
    "(PGD, APGD-CE, APGD-T; the default) or autoattack (PGD, then the full AutoAttack; slow)."
)
# `harden` has --attack already (the training attack): there the preset is --eval-attack.
EvalAttackOption = Annotated[
    EvaluationAttack | None,
    typer.Option(
        "--eval-attack",
        help=_EVAL_ATTACK_HELP,
        rich_help_panel=EVALUATION,
        show_default=False,
    ),
]
EvaluateAttackOption = Annotated[
    EvaluationAttack | None,
    typer.Option(
        "--attack",
        "--eval-attack",
        help=_EVAL_ATTACK_HELP,
        rich_help_panel=EVALUATION,
        show_default=False,
    ),
]


def _epsilons(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"numbers separated by commas, got {text!r}", param_hint="--eval-epsilons"
        ) from None


def _evaluation_attack(attack: str | None, autoattack: bool, *, option: str) -> str | None:
    """The preset asked for (None: the service's default); --autoattack is its old spelling."""
    if not autoattack or attack == "autoattack":
        return attack
    if attack is not None:
        raise typer.BadParameter(
            f"--autoattack means {option} autoattack, which conflicts with {option} {attack}",
            param_hint="--autoattack",
        )
    return "autoattack"


@dataclass(frozen=True)
class ThreatOptions:
    """The threat's norm and radius (an option group; `harden` adds its attack's steps)."""

    norm: Annotated[str | None, typer.Option(help="linf or l2.", rich_help_panel=THREAT)] = None
    epsilon: Annotated[
        float | None,
        typer.Option(
            min=0, help="Radius in [0,1] pixel space (default 8/255).", rich_help_panel=THREAT
        ),
    ] = None

    def threat_model(
        self, *, steps: int | None = None, step_size: float | None = None
    ) -> ThreatModelOptions:
        return ThreatModelOptions(
            norm=self.norm, epsilon=self.epsilon, step_size=step_size, steps=steps
        )


@dataclass(frozen=True)
class MeasureOptions:
    """How the job measures robustness, besides the preset (an option group)."""

    eval_steps: Annotated[
        int | None,
        typer.Option(
            min=1, help="Steps of each evaluation attack (default 10).", rich_help_panel=EVALUATION
        ),
    ] = None
    eval_epsilons: Annotated[
        str | None,
        typer.Option(
            help="Radii for accuracy-vs-epsilon, e.g. 0.05,0.1,0.3 (default: multiples of "
            "--epsilon).",
            rich_help_panel=EVALUATION,
        ),
    ] = None
    max_samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Test images evaluated (default: a harden job as many as fit 0.3x of its "
            "training, 200 to 1000; an evaluate job 1000).",
            rich_help_panel=EVALUATION,
        ),
    ] = None
    restarts: Annotated[
        int | None,
        typer.Option(min=1, help="PGD restarts (default 1).", rich_help_panel=EVALUATION),
    ] = None
    autoattack: Annotated[
        bool,
        typer.Option(
            "--autoattack",
            help="The same as the attack preset autoattack (kept for older scripts).",
            rich_help_panel=EVALUATION,
        ),
    ] = False

    def evaluation(self, attack: str | None, *, option: str) -> EvaluationOptions:
        """The job's evaluation options, with the preset named by `option` (its --autoattack
        spelling folded in)."""
        return EvaluationOptions(
            attack=_evaluation_attack(attack, self.autoattack, option=option),
            attack_steps=self.eval_steps,
            restarts=self.restarts,
            epsilons=_epsilons(self.eval_epsilons),
            max_samples=self.max_samples,
        )
