"""What every command that talks to the API shares: the --url/--api-key options (set on the
`robustify` command itself), a connected SDK client, and errors as one line and exit code 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from robustify import Client, RobustifyError


@dataclass(frozen=True)
class ClientOptions:
    url: str
    api_key: str | None
    timeout: float


def stdout_console() -> Console:
    # Piped output (a script, a test) gets wide lines, so ids are never cut or wrapped.
    return Console() if sys.stdout.isatty() else Console(width=200)


def stderr_console() -> Console:
    """Progress bars and running commentary: stdout keeps only the results."""
    return Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 1."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=1)


# `show --json`: what the API answered, as is.
JsonOption = Annotated[bool, typer.Option("--json", help="The API's JSON, as is.")]


def echo_json(raw: dict[str, Any]) -> None:
    typer.echo(json.dumps(raw, indent=2))


@contextmanager
def reporting_errors() -> Iterator[None]:
    """The SDK's exceptions (and a file that cannot be read or written) as one line, exit 1."""
    try:
        yield
    except RobustifyError as exc:  # the API's error says its code and field
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))


@contextmanager
def connected(ctx: typer.Context) -> Iterator[Client]:
    """A client of the API the command line names, as its API key's owner."""
    options = ctx.obj
    assert isinstance(options, ClientOptions), "the robustify callback sets ctx.obj"
    if not options.api_key:
        fail(
            "no API key: pass --api-key or set ROBUSTIFY_API_KEY "
            "(`robustify keys create NAME` makes one)"
        )
    with (
        reporting_errors(),
        Client(options.url, options.api_key, timeout=options.timeout) as client,
    ):
        yield client
