"""The options that describe a model file to upload (declared once: `models upload`, `harden`
and `evaluate` take them), and the upload with a progress bar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cli.formatting import shape
from cli.live import transfer_bar
from core.robust.models.formats import FORMATS
from robustify import Client, Model

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
    """What the API needs to know about a model file besides its bytes (an option group)."""

    name: NameOption = None
    input_shape: InputShapeOption = None
    num_classes: NumClassesOption = None
    architecture: ArchitectureOption = None
    mean: MeanOption = None
    std: StdOption = None
    model_format: FormatOption = None

    def upload(self, client: Client, path: Path, console: Console) -> Model:
        """Upload `path` with a progress bar; the API checks it before it answers."""
        if self.input_shape is None:
            raise typer.BadParameter(
                f"needed to upload {path}, e.g. 1,8,8", param_hint="--input-shape"
            )
        dimensions = _numbers(self.input_shape, "--input-shape")
        if len(dimensions) != 3 or not all(
            value.is_integer() and value >= 1 for value in dimensions
        ):
            raise typer.BadParameter(
                "three positive integers C,H,W, e.g. 1,8,8", param_hint="--input-shape"
            )
        if self.model_format is not None and self.model_format not in FORMATS:
            raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
        with transfer_bar(console, f"uploading {path.name}") as on_progress:
            model = client.models.upload(
                path,
                name=self.name,
                input_shape=[int(value) for value in dimensions],
                num_classes=self.num_classes,
                architecture=self.architecture,
                format=self.model_format,
                mean=_numbers(self.mean, "--mean") if self.mean is not None else None,
                std=_numbers(self.std, "--std") if self.std is not None else None,
                on_progress=on_progress,
            )
        console.print(
            f"Uploaded {path.name} as model {model.id} ({model.format}, input "
            f"{shape(model.input_shape)}, {model.num_classes} classes)",
            highlight=False,
        )
        for warning in model.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        return model
