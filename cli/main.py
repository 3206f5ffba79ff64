"""The `robustify` command line: running the service (up, api, worker, db, keys) and using it
(models, datasets, harden, evaluate, jobs) through the SDK; `demo` does both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import service
from cli.database import db_app
from cli.datasets import datasets_app
from cli.hardening import evaluate, harden
from cli.jobs import jobs_app
from cli.keys import keys_app
from cli.models import models_app
from cli.remote import ClientOptions, reporting_errors
from robustify import DEFAULT_URL

app = typer.Typer(
    help="robustify: harden image classifiers against adversarial attacks.", no_args_is_help=True
)
SERVICE = "Run the service"
USE = "Use the service"
app.command("up", rich_help_panel=SERVICE)(service.up)
app.command("api", rich_help_panel=SERVICE)(service.api)
app.command("worker", rich_help_panel=SERVICE)(service.worker)
app.add_typer(db_app, name="db", rich_help_panel=SERVICE)
app.add_typer(keys_app, name="keys", rich_help_panel=SERVICE)
app.add_typer(models_app, name="models", rich_help_panel=USE, no_args_is_help=True)
app.add_typer(datasets_app, name="datasets", rich_help_panel=USE, no_args_is_help=True)
app.command("harden", rich_help_panel=USE)(harden)
app.command("evaluate", rich_help_panel=USE)(evaluate)
app.add_typer(jobs_app, name="jobs", rich_help_panel=USE, no_args_is_help=True)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="ROBUSTIFY_URL", help="The API to use.")] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="ROBUSTIFY_API_KEY",
            help="Your API key (`robustify keys create NAME` makes one).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for each answer of the API.")
    ] = 60.0,
) -> None:
    """robustify: harden image classifiers against adversarial attacks."""
    ctx.obj = ClientOptions(url=url, api_key=api_key, timeout=timeout)


@app.command(rich_help_panel=USE)
def demo(
    output: Annotated[Path, typer.Option(help="Folder for the demo's model files.")] = Path(
        "demo-output"
    ),
    epochs: Annotated[int, typer.Option(min=1, max=100)] = 10,
    seed: int = 0,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Keep the service's state here (default: a temporary folder, removed after)."
        ),
    ] = None,
) -> None:
    """The whole product in one run: start the service, train, upload, harden, download.

    Trains a digits classifier, hardens it through the embedded service while showing progress,
    and prints its accuracy before and after (exit 1 if robustness did not rise).
    """
    from cli.demo import run_demo
    from cli.embedded import ServiceFailed

    try:
        with reporting_errors():
            result = run_demo(output, epochs=epochs, seed=seed, data_dir=data_dir)
    except ServiceFailed as exc:
        typer.echo(f"error: {exc}", err=True)  # with the service's last log lines
        raise typer.Exit(code=1) from None
    if not result.hardening_helped:
        raise typer.Exit(code=1)
