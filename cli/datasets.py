"""`robustify datasets upload|list|show|delete`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.catalog_tables import datasets_table
from cli.live import transfer_bar
from cli.remote import connected, stderr_console, stdout_console

datasets_app = typer.Typer(help="Upload and list datasets (the builtin ones are listed too).")

DatasetIdArgument = Annotated[
    str, typer.Argument(help="The dataset's id (ds_… or builtin:<name>).", show_default=False)
]


@datasets_app.command("upload")
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="An .npz (x, y, optional x_test, y_test) or an ImageFolder .zip/.tar.gz.",
        ),
    ],
    name: Annotated[str | None, typer.Option(help="A name (default: the file's name).")] = None,
) -> None:
    """Upload a dataset; the API checks it (shapes, labels, archive guards). Prints its id last."""
    console = stderr_console()
    with connected(ctx) as client, transfer_bar(console, f"uploading {file.name}") as on_progress:
        dataset = client.datasets.upload(file, name=name, on_progress=on_progress)
    console.print(
        f"Uploaded {file.name} as dataset {dataset.id} ({dataset.kind}, "
        f"{dataset.train_size} train / {dataset.test_size} test images, "
        f"{dataset.num_classes} classes)",
        highlight=False,
    )
    typer.echo(dataset.id)


@datasets_app.command("list")
def list_datasets(ctx: typer.Context) -> None:
    """The builtin datasets and yours."""
    with connected(ctx) as client:
        datasets = list(client.datasets.list())
    stdout_console().print(datasets_table(datasets))


@datasets_app.command("show")
def show(ctx: typer.Context, dataset_id: DatasetIdArgument) -> None:
    """One dataset."""
    with connected(ctx) as client:
        dataset = client.datasets.get(dataset_id)
    stdout_console().print(datasets_table([dataset]))


@datasets_app.command("delete")
def delete(ctx: typer.Context, dataset_id: DatasetIdArgument) -> None:
    """Delete an uploaded dataset and its file."""
    with connected(ctx) as client:
        client.datasets.delete(dataset_id)
    typer.echo(f"Deleted dataset {dataset_id}.")
