"""`robustify harden MODEL` and `robustify evaluate MODEL`: a file is uploaded first, an
mdl_ id is used as it is; the job is created, and followed with --watch (or --output)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from cli.job_options import (
    THREAT,
    DatasetOption,
    EvalAttackOption,
    EvaluateAttackOption,
    MeasureOptions,
    ModelArgument,
    SeedOption,
    ThreatOptions,
    WatchOption,
)
from cli.jobs import exit_unless_improved, follow, show_outcome
from cli.model_upload import UploadOptions
from cli.models import download_with_bar
from cli.option_groups import option_group
from cli.remote import connected, stderr_console, stdout_console
from cli.training_options import TrainingOptions
from robustify import Client, EvaluationOptions, Hyperparameters, Job, Resources, ThreatModelOptions


def job_option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """The option groups every job command takes: the threat, the measurement, the upload."""
    with_upload = option_group(UploadOptions, into="upload")(command)
    with_measure = option_group(MeasureOptions, into="measure")(with_upload)
    return option_group(ThreatOptions, into="threat")(with_measure)


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
    resources: Resources | None = None,
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
        resources=resources,
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


@option_group(TrainingOptions, into="training")
@job_option_groups
def harden(
    ctx: typer.Context,
    model: ModelArgument,
    dataset: DatasetOption = "builtin:digits",
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
    world_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processes (one device each) to fine-tune across; the job waits for a worker "
            "with as many (default 1). The batch size is the global batch.",
        ),
    ] = None,
    *,
    training: TrainingOptions,
    threat: ThreatOptions,
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
            threat_model=threat.threat_model(steps=steps, step_size=step_size),
            hyperparameters=training.hyperparameters(),
            resources=None if world_size is None else Resources(world_size=world_size),
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


@job_option_groups
def evaluate(
    ctx: typer.Context,
    model: ModelArgument,
    dataset: DatasetOption = "builtin:digits",
    attack: EvaluateAttackOption = None,
    seed: SeedOption = None,
    watch: WatchOption = False,
    *,
    threat: ThreatOptions,
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
            threat_model=threat.threat_model(),
            evaluation=evaluation,
            seed=seed,
            follow_it=watch,
            live=True,
        )
