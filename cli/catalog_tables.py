"""How the CLI shows models and datasets: their lists and one model's details."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from cli.formatting import details_grid, shape, size, titled_table, when
from robustify import Dataset, Model


def models_table(models: list[Model]) -> Table:
    table = titled_table(
        "models",
        ("id", "name", "format", "architecture", "input", "classes", "size", "from job", "created"),
        no_wrap=("id", "created"),
    )
    for model in models:
        table.add_row(
            model.id,
            Text(model.name),
            model.format,
            model.architecture or "-",
            shape(model.input_shape),
            str(model.num_classes),
            size(model.size_bytes),
            model.source_job_id or "-",
            when(model.created_at),
        )
    return table


def model_details(model: Model) -> Table:
    rows: list[tuple[str, str | Text]] = [
        ("model", model.id),
        ("name", model.name),
        ("format", model.format),
        ("architecture", model.architecture or "-"),
        ("input", shape(model.input_shape)),
        ("classes", str(model.num_classes)),
        ("mean / std", f"{model.mean or '-'} / {model.std or '-'}"),
        ("size", size(model.size_bytes)),
        ("sha256", model.sha256),
        ("from job", model.source_job_id or "-"),
        ("created", when(model.created_at)),
    ]
    rows += [("warning", Text(warning, style="yellow")) for warning in model.warnings]
    return details_grid(rows)


def datasets_table(datasets: list[Dataset]) -> Table:
    table = titled_table(
        "datasets",
        ("id", "name", "kind", "input", "classes", "train", "test", "size"),
        no_wrap=("id",),
    )
    for dataset in datasets:
        table.add_row(
            dataset.id,
            Text(dataset.name),
            dataset.kind,
            shape(dataset.input_shape),
            str(dataset.num_classes),
            str(dataset.train_size) if dataset.train_size is not None else "-",
            str(dataset.test_size) if dataset.test_size is not None else "-",
            size(dataset.size_bytes),
        )
    return table
