"""The `robustify` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli import service
from cli.database import db_app
from cli.keys import keys_app

app = typer.Typer(
    help="robustify: harden image classifiers against adversarial attacks.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.command("up")(service.up)
app.command("api")(service.api)
app.command("worker")(service.worker)


@app.callback()
def main() -> None:
    """robustify: harden image classifiers against adversarial attacks."""


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Folder for the demo's model files.")] = Path(
        "demo-output"
    ),
    epochs: Annotated[int, typer.Option(min=1, max=100)] = 10,
    seed: int = 0,
) -> None:
    """Train a digits classifier, harden it, and print its accuracy before and after."""
    from cli.demo import run_demo

    result = run_demo(output, epochs=epochs, seed=seed)
    if result.after.robust_accuracy <= result.before.robust_accuracy:
        raise typer.Exit(code=1)
