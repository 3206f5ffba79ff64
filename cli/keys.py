"""`robustify keys create|list|revoke`: API keys, managed straight in the database.

These run where the database is reachable (an operator's shell, `docker compose run api ...`);
they read the same ROBUSTIFY_* settings as the service.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cli.database import open_database
from core.service.config import Settings

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

NAME_MAX_LENGTH = 200  # the width of the owners.name and api_keys.name columns


def _checked_name(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > NAME_MAX_LENGTH:
        raise typer.BadParameter(f"{what} must be 1 to {NAME_MAX_LENGTH} characters")
    return value


def _console() -> Console:
    # Piped output (a script, a test) gets wide lines, so ids are never cut or wrapped.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. 'ci' or 'alice-laptop'.")],
    owner: Annotated[
        str | None,
        typer.Option(help="The owner the key acts for (created on first use). Default: NAME."),
    ] = None,
) -> None:
    """Create an API key. The key itself is printed once, as the last line."""
    from core.service.auth import create_key
    from core.service.db import transaction

    key_name = _checked_name(name, "NAME")
    owner_name = _checked_name(owner, "--owner") if owner is not None else key_name
    with open_database(Settings()) as sessions, transaction(sessions) as session:
        created = create_key(session, owner_name=owner_name, key_name=key_name)
        key_id = created.record.id
    typer.echo(f"Created API key {key_id} '{key_name}' for owner '{owner_name}'.")
    typer.echo("It is shown only this once; send it as 'Authorization: Bearer <key>':")
    typer.echo(created.key)


@keys_app.command("list")
def list_(
    show_revoked: Annotated[
        bool, typer.Option("--revoked/--no-revoked", help="Include revoked keys.")
    ] = True,
) -> None:
    """List API keys: id, owner, name, the key's first characters, when created and revoked."""
    from core.service.auth import list_keys

    with open_database(Settings()) as sessions, sessions() as session:
        rows = [
            (key.id, owner.name, key.name, key.prefix, key.created_at, key.revoked_at)
            for key, owner in list_keys(session)
            if show_revoked or key.revoked_at is None
        ]
    console = _console()
    if not rows:
        console.print("No API keys yet. Create one with: robustify keys create NAME")
        return
    table = Table(title="API keys")
    for column in ("id", "owner", "name", "prefix", "created", "revoked"):
        table.add_column(column, no_wrap=column in ("id", "prefix", "created", "revoked"))
    for key_id, owner_name, key_name, prefix, created_at, revoked_at in rows:
        table.add_row(
            key_id,
            Text(owner_name),  # Text: a name is never read as Rich markup
            Text(key_name),
            prefix + "…",
            _when(created_at),
            _when(revoked_at),
            style="dim" if revoked_at is not None else None,
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…), as `keys list` shows it.")],
) -> None:
    """Revoke an API key: requests that send it are refused (401) from now on."""
    from core.service.auth import revoke_key
    from core.service.db import transaction
    from core.service.errors import NotFound
    from core.service.tables import ApiKey

    try:
        with open_database(Settings()) as sessions, transaction(sessions) as session:
            existing = session.get(ApiKey, key_id)
            was_revoked = existing is not None and existing.revoked_at is not None
            record = revoke_key(session, key_id)
            revoked_at = record.revoked_at
    except NotFound:
        typer.echo(
            f"error: no API key with id '{key_id}' (`robustify keys list` shows the ids)",
            err=True,
        )
        raise typer.Exit(code=1) from None
    if was_revoked:
        typer.echo(f"API key {key_id} was already revoked at {_when(revoked_at)}.")
    else:
        typer.echo(f"Revoked API key {key_id}.")
