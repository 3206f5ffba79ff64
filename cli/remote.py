"""What every command that talks to the API shares: the --url/--api-key options (set on the
`robustify` command itself), a connected SDK client, and errors as one line and exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

import typer
from rich.console import Console

from cli.sdk import ApiError, ApiUnavailable, ChecksumMismatch, RobustifyClient


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


def describe_api_error(error: ApiError) -> str:
    where = f", field {error.field}" if error.field else ""
    return f"{error.message} ({error.code}{where})"


@contextmanager
def reporting_errors() -> Iterator[None]:
    """The SDK's exceptions (and a file that cannot be read or written) as one line, exit 1."""
    try:
        yield
    except ApiError as exc:
        fail(describe_api_error(exc))
    except (ApiUnavailable, ChecksumMismatch) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))


@contextmanager
def connected(ctx: typer.Context) -> Iterator[RobustifyClient]:
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
        RobustifyClient(options.url, options.api_key, timeout=options.timeout) as client,
    ):
        yield client
