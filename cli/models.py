"""`robustify models upload|list|show|download|delete`, and the upload options `harden` and
`evaluate` share when they are handed a file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.display import model_details, models_table, transfer_bar
from cli.remote import connected, stderr_console, stdout_console
from cli.sdk import Model, RobustifyClient

models_app = typer.Typer(help="Upload, list, show, download and delete models.")

FILE_SUFFIX = {"torchscript": ".pt", "state_dict": ".pt", "safetensors": ".safetensors"}
FORMATS = tuple(FILE_SUFFIX)

ModelIdArgument = Annotated[str, typer.Argument(help="The model's id (mdl_…).", show_default=False)]
NameOption = Annotated[str | None, typer.Option(help="A name for it (default: the file's name).")]
InputShapeOption = Annotated[
    str | None,
    typer.Option(
        help="The input the model takes, C,H,W: e.g. 1,8,8 or 3,32,32.", show_default=False
    ),
]
NumClassesOption = Annotated[
    int | None, typer.Option(min=1, help="Its number of classes (checked by a forward pass).")
]
ArchitectureOption = Annotated[
    str | None,
    typer.Option(help="builtin:<name> or torchvision:<name>: needed for a state_dict/safetensors."),
]
MeanOption = Annotated[
    str | None, typer.Option(help="The normalization it expects: one mean per channel, e.g. 0.5.")
]
StdOption = Annotated[str | None, typer.Option(help="One std per channel, e.g. 0.25.")]
FormatOption = Annotated[
    str | None,
    typer.Option("--format", help=f"{', '.join(FORMATS)} (default: detected from the bytes)."),
]


def _numbers(text: str, option: str) -> list[float]:
    try:
        raw = json.loads(text) if text.strip().startswith("[") else text.split(",")
        return [float(str(value).strip()) for value in raw]
    except (ValueError, TypeError):
        raise typer.BadParameter(
            f"expected numbers separated by commas, got {text!r}", param_hint=option
        ) from None


@dataclass(frozen=True)
class UploadOptions:
    """What the API needs to know about a model file besides its bytes."""

    name: str | None
    input_shape: str | None
    num_classes: int | None
    architecture: str | None
    mean: str | None
    std: str | None
    format: str | None

    def upload(self, client: RobustifyClient, path: Path, console: Console) -> Model:
        """Upload `path` with a progress bar; the API checks it before it answers."""
        if self.input_shape is None:
            raise typer.BadParameter(
                f"needed to upload {path}, e.g. 1,8,8", param_hint="--input-shape"
            )
        shape = _numbers(self.input_shape, "--input-shape")
        if len(shape) != 3 or not all(value.is_integer() and value >= 1 for value in shape):
            raise typer.BadParameter(
                "three positive integers C,H,W, e.g. 1,8,8", param_hint="--input-shape"
            )
        if self.format is not None and self.format not in FORMATS:
            raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
        with transfer_bar(console, f"uploading {path.name}") as on_progress:
            model = client.upload_model(
                path,
                name=self.name,
                input_shape=[int(value) for value in shape],
                num_classes=self.num_classes,
                architecture=self.architecture,
                format=self.format,
                mean=_numbers(self.mean, "--mean") if self.mean is not None else None,
                std=_numbers(self.std, "--std") if self.std is not None else None,
                on_progress=on_progress,
            )
        console.print(
            f"Uploaded {path.name} as model {model.id} ({model.format}, input "
            f"{'x'.join(str(d) for d in model.input_shape)}, {model.num_classes} classes)",
            highlight=False,
        )
        for warning in model.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        return model


def default_file_name(model: Model) -> Path:
    """The model's name as a file name in this folder, with its format's suffix."""
    name = Path(model.name).name or model.id
    suffix = FILE_SUFFIX.get(model.format, "")
    return Path(name if name.endswith(suffix) else name + suffix)


def download_with_bar(
    client: RobustifyClient,
    model_id: str,
    destination: Path,
    console: Console,
    *,
    description: str | None = None,
) -> Path:
    with transfer_bar(console, description or f"downloading {model_id}") as on_progress:
        return client.download_model(model_id, destination, on_progress=on_progress)


@models_app.command("upload")
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The model file.")
    ],
    input_shape: InputShapeOption = None,
    num_classes: NumClassesOption = None,
    name: NameOption = None,
    architecture: ArchitectureOption = None,
    mean: MeanOption = None,
    std: StdOption = None,
    model_format: FormatOption = None,
) -> None:
    """Upload a model (TorchScript, state_dict or safetensors); prints its id last."""
    options = UploadOptions(name, input_shape, num_classes, architecture, mean, std, model_format)
    if input_shape is None:
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
        models = list(client.list_models())
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
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON, as is.")] = False,
) -> None:
    """A model: format, input, classes, size, sha256, warnings."""
    with connected(ctx) as client:
        model = client.get_model(model_id)
    if as_json:
        typer.echo(json.dumps(model.raw, indent=2))
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
            destination = default_file_name(client.get_model(model_id))
        download_with_bar(client, model_id, destination, stderr_console())
    typer.echo(f"Saved model {model_id} to {destination}")


@models_app.command("delete")
def delete(ctx: typer.Context, model_id: ModelIdArgument) -> None:
    """Delete a model and its file."""
    with connected(ctx) as client:
        client.delete_model(model_id)
    typer.echo(f"Deleted model {model_id}.")
