"""`robustify jobs list|show|watch|cancel|report`, and following a job to its end (which
`harden`, `evaluate` and `demo` do too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.job_tables import accuracy_table, job_details, job_warnings, jobs_table
from cli.live import JobWatcher
from cli.remote import JsonOption, connected, echo_json, stderr_console, stdout_console
from robustify import TERMINAL_STATUSES, Client, Job

jobs_app = typer.Typer(help="List, follow, cancel your jobs and get their reports.")

JobIdArgument = Annotated[str, typer.Argument(help="The job's id (job_…).", show_default=False)]
STATUSES = ("queued", "running", *TERMINAL_STATUSES)


def follow(client: Client, job_id: str, console: Console, *, live: bool) -> Job:
    """Wait for the job to end; with `live`, a progress bar and a line per epoch meanwhile.
    Ctrl-C stops watching, not the job."""
    try:
        if live:
            with JobWatcher(console) as watcher:
                return client.jobs.wait(
                    job_id, on_event=watcher.on_event, on_progress=watcher.on_progress
                )
        with console.status(f"waiting for job {job_id} to end"):
            return client.jobs.wait(job_id)
    except KeyboardInterrupt:
        console.print(
            f"Stopped watching; job {job_id} goes on (`robustify jobs watch {job_id}` follows it, "
            f"`robustify jobs cancel {job_id}` stops it).",
            highlight=False,
        )
        raise typer.Exit(code=130) from None


def show_outcome(job: Job, console: Console) -> None:
    """The accuracy table and any sanity-check warnings; exit code 1 if the job did not
    succeed (after saying why on stderr)."""
    table = accuracy_table(job)
    if table is not None and job.status == "succeeded":
        console.print(table)
    for warning in job_warnings(job):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if job.status == "succeeded":
        if job.metrics.verdict is not None:
            color = "green" if job.metrics.verdict == "improved" else "red"
            console.print(f"Verdict: [{color}]{job.metrics.verdict}[/]", highlight=False)
        if job.result_model_id:
            console.print(f"Hardened model: {job.result_model_id}", highlight=False)
        return
    reason = f"{job.error.message} ({job.error.code})" if job.error else job.status
    verb = "failed" if job.status == "failed" else "was cancelled"
    typer.echo(f"error: job {job.id} {verb}: {' '.join(reason.split())}", err=True)
    raise typer.Exit(code=1)


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help=f"Only jobs in this status: {', '.join(STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (newest first).")] = 20,
) -> None:
    """Your jobs, newest first."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(STATUSES)}", param_hint="--status")
    with connected(ctx) as client:
        jobs: list[Job] = []
        for job in client.jobs.list(status=status):
            jobs.append(job)
            if len(jobs) >= limit:
                break
    console = stdout_console()
    if not jobs:
        console.print(
            f"No {status} jobs."
            if status is not None
            else "No jobs yet. Start one with: robustify harden MODEL --watch"
        )
        return
    console.print(jobs_table(jobs))


@jobs_app.command("show")
def show(
    ctx: typer.Context,
    job_id: JobIdArgument,
    as_json: JsonOption = False,
) -> None:
    """A job: settings, status, progress, metrics, result, error."""
    with connected(ctx) as client:
        job = client.jobs.get(job_id)
        report_url = client.jobs.report_url(job.id)
    if as_json:
        echo_json(job.raw)
        return
    console = stdout_console()
    console.print(job_details(job, report_url=report_url))
    table = accuracy_table(job)
    if table is not None:
        console.print(table)
    for warning in job_warnings(job):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)


@jobs_app.command("watch")
def watch(ctx: typer.Context, job_id: JobIdArgument) -> None:
    """Follow a job live until it ends, then show its results (exit 1 if it failed; exit 3 if a
    harden job succeeded but its verdict is not `improved`)."""
    with connected(ctx) as client:
        job = follow(client, job_id, stderr_console(), live=True)
    show_outcome(job, stdout_console())
    exit_unless_improved(job)


# A harden job that ran to its end but whose model is no better (see core.service.jobs.verdict):
# neither success (0) nor failure (1), so that scripts can tell the three apart.
NOT_IMPROVED_EXIT_CODE = 3


def exit_unless_improved(job: Job) -> None:
    """Exit with code 3 (after saying why on stderr) if `job` is a succeeded harden job whose
    verdict is not `improved`."""
    verdict = job.metrics.verdict
    if job.kind != "harden" or job.status != "succeeded" or verdict == "improved":
        return
    typer.echo(
        f"verdict: {verdict or 'unknown'}: the hardened model {job.result_model_id} is no "
        "better than the uploaded one (see `robustify jobs show` and its report)",
        err=True,
    )
    raise typer.Exit(code=NOT_IMPROVED_EXIT_CODE)


@jobs_app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobIdArgument) -> None:
    """Cancel a job: a queued one at once, a running one at its next batch."""
    with connected(ctx) as client:
        job = client.jobs.cancel(job_id)
    if job.status == "cancelled":
        typer.echo(f"Cancelled job {job.id}.")
    else:
        typer.echo(f"Cancelling job {job.id}: it stops at its next batch.")


@jobs_app.command("report")
def report(
    ctx: typer.Context,
    job_id: JobIdArgument,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to save it. Default: JOB_ID-report.html."),
    ] = None,
) -> None:
    """Save the job's robustness report: one self-contained HTML file."""
    destination = output or Path(f"{job_id}-report.html")
    with connected(ctx) as client:
        client.jobs.download_report(job_id, destination)
    typer.echo(f"Saved the report of job {job_id} to {destination}")
