"""How the CLI writes values (percentages, times, sizes, durations, a job's status and phase)
and the two table shapes its commands print: a titled table of rows, a grid of details."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from rich.table import Table
from rich.text import Text

PHASES = {
    "queued": "queued",
    "evaluating_before": "evaluating the model",
    "probing_lr": "choosing the learning rate",
    "training": "fine-tuning",
    "evaluating_after": "evaluating the result",
    "done": "done",
}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


def size(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "-"
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def shape(dimensions: Iterable[int]) -> str:
    """An input shape as 1x8x8."""
    return "x".join(str(dimension) for dimension in dimensions)


def status_text(status: str) -> Text:
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan"}
    return Text(status, style=style.get(status, ""))


def titled_table(title: str, columns: Sequence[str], *, no_wrap: Sequence[str]) -> Table:
    """A table of one row per item; the `no_wrap` columns (ids, dates) are never cut."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column in no_wrap)
    return table


def details_grid(rows: Iterable[tuple[str, str | Text]]) -> Table:
    """One thing's details: a bold name and its value per line."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else Text(value))
    return table
