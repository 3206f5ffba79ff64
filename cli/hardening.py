"""`robustify harden MODEL` and `robustify evaluate MODEL`: a file is uploaded first, an
mdl_ id is used as it is; the job is created, and followed with --watch (or --output)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from cli.jobs import exit_unless_improved, follow, show_outcome
from cli.models import (
    ArchitectureOption,
    FormatOption,
    InputShapeOption,
    MeanOption,
    NameOption,
    NumClassesOption,
    StdOption,
    UploadOptions,
    download_with_bar,
)
from cli.remote import connected, stderr_console, stdout_console
from cli.sdk import EvaluationOptions, Hyperparameters, Job, RobustifyClient, ThreatModelOptions

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
NormOption = Annotated[str | None, typer.Option(help="linf or l2.", rich_help_panel=THREAT)]
EpsilonOption = Annotated[
    float | None,
    typer.Option(
        min=0, help="Radius in [0,1] pixel space (default 8/255).", rich_help_panel=THREAT
    ),
]
SeedOption = Annotated[int | None, typer.Option(min=0, help="Random seed (default 0).")]
EvalStepsOption = Annotated[
    int | None,
    typer.Option(
        min=1, help="Steps of each evaluation attack (default 10).", rich_help_panel=EVALUATION
    ),
]
EvalEpsilonsOption = Annotated[
    str | None,
    typer.Option(
        help="Radii for accuracy-vs-epsilon, e.g. 0.05,0.1,0.3 (default: multiples of --epsilon).",
        rich_help_panel=EVALUATION,
    ),
]
MaxSamplesOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Test images evaluated (default: a harden job as many as fit 0.3x of its "
        "training, 200 to 1000; an evaluate job 1000).",
        rich_help_panel=EVALUATION,
    ),
]
RestartsOption = Annotated[
    int | None, typer.Option(min=1, help="PGD restarts (default 1).", rich_help_panel=EVALUATION)
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
AutoAttackOption = Annotated[
    bool,
    typer.Option(
        "--autoattack",
        help="The same as the attack preset autoattack (kept for older scripts).",
        rich_help_panel=EVALUATION,
    ),
]
WatchOption = Annotated[
    bool, typer.Option("--watch", "-w", help="Follow the job live until it ends; show its results.")
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


def _model_id(client: RobustifyClient, model: str, upload: UploadOptions, console: Console) -> str:
    path = Path(model)
    if path.is_file():
        return upload.upload(client, path, console).id
    if model.startswith("mdl_"):
        return model
    raise typer.BadParameter(
        f"{model!r} is neither a file nor a model id (mdl_…)", param_hint="MODEL"
    )


def _queued(job: Job, console: Console) -> None:
    console.print(
        f"Queued {job.kind} job {job.id} (model {job.model_id}, {job.dataset})", highlight=False
    )


def harden(
    ctx: typer.Context,
    model: ModelArgument,
    dataset: DatasetOption = "builtin:digits",
    norm: NormOption = None,
    epsilon: EpsilonOption = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, help="PGD steps of the training attack (default 10).", rich_help_panel=THREAT
        ),
    ] = None,
    step_size: Annotated[
        float | None,
        typer.Option(min=0, help="PGD step (default 2.5*epsilon/steps).", rich_help_panel=THREAT),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Epochs of fine-tuning (default 10).", rich_help_panel=TRAINING),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Default 128.", rich_help_panel=TRAINING)
    ] = None,
    peak_lr: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Peak learning rate (default: chosen by a short probe before training, about "
            "10% of its cost).",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            help="slow_start_fast_decay (default), constant, piecewise, cosine, one_cycle.",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="auto (default: AdamW for a LayerNorm network such as ConvNeXt or a ViT, else "
            "SGD), sgd or adamw.",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    warmup_fraction: Annotated[
        float | None,
        typer.Option(
            min=0, help="Slow start's share of the run (default 0.5).", rich_help_panel=TRAINING
        ),
    ] = None,
    loss: Annotated[
        str | None, typer.Option(help="pgd (default) or trades.", rich_help_panel=TRAINING)
    ] = None,
    trades_beta: Annotated[
        float | None,
        typer.Option(min=0, help="TRADES' beta (default 6).", rich_help_panel=TRAINING),
    ] = None,
    attack: Annotated[
        str | None,
        typer.Option(
            help="Training attack: pgd (default) or fgsm (fast mode).", rich_help_panel=TRAINING
        ),
    ] = None,
    epsilon_rampup: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Share of the run over which epsilon grows from 0 (default 0.3).",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    max_clean_drop: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=1,
            help="The most clean accuracy may fall: the best epoch keeps validation clean "
            "accuracy within it, and the verdict is clean_dropped past it (default 0.03).",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    validation_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share of the training images held out to choose the best epoch on, unless "
            "the dataset brings its own validation split (default 0.1).",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    guards: Annotated[
        bool | None,
        typer.Option(
            "--guards/--no-guards",
            help="Step back at a lower rate when the loss climbs or clean accuracy collapses, "
            "and stop early after two steps back (default on).",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    weight_interpolation: Annotated[
        bool | None,
        typer.Option(
            "--weight-interpolation/--no-weight-interpolation",
            help="When no epoch keeps clean accuracy within --max-clean-drop, hand back the "
            "most robust mix of the best epoch's weights with the uploaded ones that keeps it "
            "(4 validations along the line between them; default on).",
            rich_help_panel=TRAINING,
        ),
    ] = None,
    eval_steps: EvalStepsOption = None,
    eval_epsilons: EvalEpsilonsOption = None,
    max_samples: MaxSamplesOption = None,
    restarts: RestartsOption = None,
    eval_attack: EvalAttackOption = None,
    autoattack: AutoAttackOption = False,
    seed: SeedOption = None,
    watch: WatchOption = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Wait for the job and save the hardened model here."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="A retry with the same key returns the same job.")
    ] = None,
    name: NameOption = None,
    input_shape: InputShapeOption = None,
    num_classes: NumClassesOption = None,
    architecture: ArchitectureOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    model_format: FormatOption = None,
) -> None:
    """Harden a model: adversarial fine-tuning with a slow start, fast decay schedule.

    Options left out get the service's defaults (the paper's). Exit code 1 if the job fails;
    with --watch or --output, exit code 3 if it succeeded but its verdict is not `improved`
    (clean_dropped or not_improved: the model handed back is no better).
    """
    upload = UploadOptions(name, input_shape, num_classes, architecture, mean, std, model_format)
    err = stderr_console()
    with connected(ctx) as client:
        job = client.harden(
            _model_id(client, model, upload, err),
            dataset=dataset,
            threat_model=ThreatModelOptions(
                norm=norm, epsilon=epsilon, step_size=step_size, steps=steps
            ),
            hyperparameters=Hyperparameters(
                epochs=epochs,
                batch_size=batch_size,
                schedule=schedule,
                optimizer=optimizer,
                peak_lr=peak_lr,
                warmup_fraction=warmup_fraction,
                loss=loss,
                trades_beta=trades_beta,
                attack=attack,
                epsilon_rampup_fraction=epsilon_rampup,
                max_clean_drop=max_clean_drop,
                validation_fraction=validation_fraction,
                guards=guards,
                weight_interpolation=weight_interpolation,
            ),
            evaluation=EvaluationOptions(
                attack=_evaluation_attack(eval_attack, autoattack, option="--eval-attack"),
                attack_steps=eval_steps,
                restarts=restarts,
                epsilons=_epsilons(eval_epsilons),
                max_samples=max_samples,
            ),
            seed=seed,
            idempotency_key=idempotency_key,
        )
        _queued(job, err)
        if not watch and output is None:
            err.print(f"Follow it with: robustify jobs watch {job.id}", highlight=False)
            typer.echo(job.id)
            return
        job = follow(client, job.id, err, live=watch)
        show_outcome(job, stdout_console())
        if output is not None and job.result_model_id:
            download_with_bar(client, job.result_model_id, output, err)
            typer.echo(f"Saved the hardened model to {output}")
    exit_unless_improved(job)


def evaluate(
    ctx: typer.Context,
    model: ModelArgument,
    dataset: DatasetOption = "builtin:digits",
    norm: NormOption = None,
    epsilon: EpsilonOption = None,
    eval_steps: EvalStepsOption = None,
    eval_epsilons: EvalEpsilonsOption = None,
    max_samples: MaxSamplesOption = None,
    restarts: RestartsOption = None,
    attack: EvaluateAttackOption = None,
    autoattack: AutoAttackOption = False,
    seed: SeedOption = None,
    watch: WatchOption = False,
    name: NameOption = None,
    input_shape: InputShapeOption = None,
    num_classes: NumClassesOption = None,
    architecture: ArchitectureOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    model_format: FormatOption = None,
) -> None:
    """Measure a model's robustness (clean, the attack ensemble's robust accuracy, accuracy per
    epsilon, sanity checks), each accuracy with its 95% interval.

    Nothing is trained. Exit code 1 if the job fails.
    """
    upload = UploadOptions(name, input_shape, num_classes, architecture, mean, std, model_format)
    err = stderr_console()
    with connected(ctx) as client:
        job = client.evaluate(
            _model_id(client, model, upload, err),
            dataset=dataset,
            threat_model=ThreatModelOptions(norm=norm, epsilon=epsilon),
            evaluation=EvaluationOptions(
                attack=_evaluation_attack(attack, autoattack, option="--attack"),
                attack_steps=eval_steps,
                restarts=restarts,
                epsilons=_epsilons(eval_epsilons),
                max_samples=max_samples,
            ),
            seed=seed,
        )
        _queued(job, err)
        if not watch:
            err.print(f"Follow it with: robustify jobs watch {job.id}", highlight=False)
            typer.echo(job.id)
            return
        job = follow(client, job.id, err, live=True)
    show_outcome(job, stdout_console())
