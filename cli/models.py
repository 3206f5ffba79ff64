"""`robustify models upload|list|show|download|delete`, and a model's download with a progress
bar (which `harden --output` and `demo` do too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.catalog_tables import model_details, models_table
from cli.live import transfer_bar
from cli.model_upload import UploadOptions
from cli.option_groups import option_group
from cli.remote import JsonOption, connected, echo_json, stderr_console, stdout_console
from core.robust.models.formats import FILE_SUFFIXES
from robustify import Client, Model

models_app = typer.Typer(help="Upload, list, show, download and delete models.")

ModelIdArgument = Annotated[str, typer.Argument(help="The model's id (mdl_…).", show_default=False)]


def default_file_name(model: Model) -> Path:
    """The model's name as a file name in this folder, with its format's suffix."""
    name = Path(model.name).name or model.id
    suffix = FILE_SUFFIXES.get(model.format, "")
    return Path(name if name.endswith(suffix) else name + suffix)


def download_with_bar(
    client: Client,
    model_id: str,
    destination: Path,
    console: Console,
    *,
    description: str | None = None,
) -> Path:
    with transfer_bar(console, description or f"downloading {model_id}") as on_progress:
        return client.models.download(model_id, destination, on_progress=on_progress)


@models_app.command("upload")
@option_group(UploadOptions, into="options")
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The model file.")
    ],
    *,
    options: UploadOptions,
) -> None:
    """Upload a model (TorchScript, state_dict or safetensors); prints its id last."""
    if options.input_shape is None:
        raise typer.BadParameter(
            "the input the model takes, e.g. 1,8,8", param_hint="--input-shape"
        )
    with connected(ctx) as client:
        model = options.upload(client, file, stderr_console())
    typer.echo(model.id)


@models_app.command("list")
def list_models(ctx: typer.Context) -> None:
    """Your models, newest first (hardened ones name the job that made them)."""
    with connected(ctx) as client:
        models = list(client.models.list())
    console = stdout_console()
    if not models:
        console.print(
            "No models yet. Upload one with: robustify models upload FILE --input-shape C,H,W"
        )
        return
    console.print(models_table(models))


@models_app.command("show")
def show(
    ctx: typer.Context,
    model_id: ModelIdArgument,
    as_json: JsonOption = False,
) -> None:
    """A model: format, input, classes, size, sha256, warnings."""
    with connected(ctx) as client:
        model = client.models.get(model_id)
    if as_json:
        echo_json(model.raw)
        return
    stdout_console().print(model_details(model))


@models_app.command("download")
def download(
    ctx: typer.Context,
    model_id: ModelIdArgument,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to save it. Default: the model's name."),
    ] = None,
) -> None:
    """Download a model's file (its sha256 is checked)."""
    with connected(ctx) as client:
        destination = output
        if destination is None:
            destination = default_file_name(client.models.get(model_id))
        download_with_bar(client, model_id, destination, stderr_console())
    typer.echo(f"Saved model {model_id} to {destination}")


@models_app.command("delete")
def delete(ctx: typer.Context, model_id: ModelIdArgument) -> None:
    """Delete a model and its file."""
    with connected(ctx) as client:
        client.models.delete(model_id)
    typer.echo(f"Deleted model {model_id}.")
