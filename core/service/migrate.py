"""Bring a database up to the newest schema with Alembic (`robustify db upgrade`, `up`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from core.service.config import Settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(settings: Settings, revision: str = "head") -> None:
    if settings.resolved_database_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.resolved_database_url), revision)
