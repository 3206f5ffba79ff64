"""`robustify db upgrade`, and the database as the CLI's own commands open it (migrated first)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from core.service.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)


def display_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def migrate(settings: Settings, revision: str = "head") -> None:
    """Bring the database to the newest schema; a clear error and exit 1 if it can't be reached."""
    from sqlalchemy.exc import OperationalError

    from core.service.migrate import upgrade_database

    try:
        upgrade_database(settings, revision)
    except OperationalError as exc:
        typer.echo(
            f"error: cannot reach the database at {display_url(settings.resolved_database_url)}:"
            f" {exc.orig}",
            err=True,
        )
        raise typer.Exit(code=1) from exc


@contextmanager
def open_database(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database, migrated first (a new database gets its tables)."""
    from core.service.db import make_engine, make_session_factory

    migrate(settings)
    engine = make_engine(settings)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@db_app.command("upgrade")
def upgrade(
    revision: Annotated[str, typer.Option(help="The Alembic revision to upgrade to.")] = "head",
) -> None:
    """Create or upgrade the tables of the database that ROBUSTIFY_DATABASE_URL names."""
    from alembic.script import ScriptDirectory

    from core.service.migrate import alembic_config

    settings = Settings()
    migrate(settings, revision)
    if revision == "head":
        config = alembic_config(settings.resolved_database_url)
        revision = ScriptDirectory.from_config(config).get_current_head() or "head"
    typer.echo(f"Database {display_url(settings.resolved_database_url)} is at revision {revision}.")
