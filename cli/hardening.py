"""`robustify harden MODEL` and `robustify evaluate MODEL`: a file is uploaded first, an
mdl_ id is used as it is; the job is created, and followed with --watch (or --output)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from cli.job_options import (
    THREAT,
    TRAINING,
    DatasetOption,
    EpsilonOption,
    EvalAttackOption,
    EvaluateAttackOption,
    MeasureOptions,
    ModelArgument,
    NormOption,
    SeedOption,
    WatchOption,
)
from cli.jobs import exit_unless_improved, follow, show_outcome
from cli.model_upload import UploadOptions
from cli.models import download_with_bar
from cli.option_groups import option_group
from cli.remote import connected, stderr_console, stdout_console
from robustify import Client, EvaluationOptions, Hyperparameters, Job, ThreatModelOptions


def _model_id(client: Client, model: str, upload: UploadOptions, console: Console) -> str:
    path = Path(model)
    if path.is_file():
        return upload.upload(client, path, console).id
    if model.startswith("mdl_"):
        return model
    raise typer.BadParameter(
        f"{model!r} is neither a file nor a model id (mdl_…)", param_hint="MODEL"
    )


def _queue_job(
    client: Client,
    *,
    kind: Literal["harden", "evaluate"],
    model: str,
    upload: UploadOptions,
    dataset: str,
    threat_model: ThreatModelOptions,
    evaluation: EvaluationOptions,
    hyperparameters: Hyperparameters | None = None,
    seed: int | None,
    idempotency_key: str | None = None,
    follow_it: bool,
    live: bool,
) -> Job | None:
    """Create the job (uploading the model file first); with `follow_it`, wait for its end,
    show its outcome and return the ended job; else print how to follow it and its id."""
    err = stderr_console()
    job = client.jobs.create(
        kind=kind,
        model_id=_model_id(client, model, upload, err),
        dataset=dataset,
        threat_model=threat_model,
        hyperparameters=hyperparameters,
        evaluation=evaluation,
        seed=seed,
        idempotency_key=idempotency_key,
    )
    err.print(
        f"Queued {job.kind} job {job.id} (model {job.model_id}, {job.dataset})", highlight=False
    )
    if not follow_it:
        err.print(f"Follow it with: robustify jobs watch {job.id}", highlight=False)
        typer.echo(job.id)
        return None
    job = follow(client, job.id, err, live=live)
    show_outcome(job, stdout_console())
    return job


@option_group(UploadOptions, into="upload")
@option_group(MeasureOptions, into="measure")
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
    eval_attack: EvalAttackOption = None,
    seed: SeedOption = None,
    watch: WatchOption = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Wait for the job and save the hardened model here."),
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="A retry with the same key returns the same job.")
    ] = None,
    *,
    measure: MeasureOptions,
    upload: UploadOptions,
) -> None:
    """Harden a model: adversarial fine-tuning with a slow start, fast decay schedule.

    Options left out get the service's defaults (the paper's). Exit code 1 if the job fails;
    with --watch or --output, exit code 3 if it succeeded but its verdict is not `improved`
    (clean_dropped or not_improved: the model handed back is no better).
    """
    evaluation = measure.evaluation(eval_attack, option="--eval-attack")
    with connected(ctx) as client:
        job = _queue_job(
            client,
            kind="harden",
            model=model,
            upload=upload,
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
            evaluation=evaluation,
            seed=seed,
            idempotency_key=idempotency_key,
            follow_it=watch or output is not None,
            live=watch,
        )
        if job is None:
            return
        if output is not None and job.result_model_id:
            download_with_bar(client, job.result_model_id, output, stderr_console())
            typer.echo(f"Saved the hardened model to {output}")
    exit_unless_improved(job)


@option_group(UploadOptions, into="upload")
@option_group(MeasureOptions, into="measure")
def evaluate(
    ctx: typer.Context,
    model: ModelArgument,
    dataset: DatasetOption = "builtin:digits",
    norm: NormOption = None,
    epsilon: EpsilonOption = None,
    attack: EvaluateAttackOption = None,
    seed: SeedOption = None,
    watch: WatchOption = False,
    *,
    measure: MeasureOptions,
    upload: UploadOptions,
) -> None:
    """Measure a model's robustness (clean, the attack ensemble's robust accuracy, accuracy per
    epsilon, sanity checks), each accuracy with its 95% interval.

    Nothing is trained. Exit code 1 if the job fails.
    """
    evaluation = measure.evaluation(attack, option="--attack")
    with connected(ctx) as client:
        _queue_job(
            client,
            kind="evaluate",
            model=model,
            upload=upload,
            dataset=dataset,
            threat_model=ThreatModelOptions(norm=norm, epsilon=epsilon),
            evaluation=evaluation,
            seed=seed,
            follow_it=watch,
            live=True,
        )
