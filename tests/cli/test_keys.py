"""`robustify keys create|list|revoke` and `robustify db upgrade`, as real subprocesses on a
new SQLite file and on a new PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import Session, sessionmaker

from core.service.auth import authenticate, create_key
from core.service.config import Settings
from core.service.db import make_engine, make_session_factory, transaction
from core.service.errors import Unauthorized
from core.service.migrate import upgrade_database
from core.service.tables import Base


@pytest.fixture()
def sessions(cli_settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the same database the command uses (tables created when needed)."""
    engine = make_engine(cli_settings)
    yield make_session_factory(engine)
    engine.dispose()


def test_db_upgrade_creates_every_table(run_robustify, cli_settings):
    completed = run_robustify("db", "upgrade")

    assert completed.returncode == 0, completed.stderr
    engine = make_engine(cli_settings)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) | {"alembic_version"} <= tables


def test_created_key_is_the_last_line_and_authenticates(run_robustify, sessions):
    completed = run_robustify("keys", "create", "ci", "--owner", "alice")

    assert completed.returncode == 0, completed.stderr
    key = completed.stdout.strip().splitlines()[-1]
    with sessions() as session:
        assert authenticate(session, key).name == "alice"


@pytest.mark.parametrize("cli_settings", ["sqlite"], indirect=True)
def test_owner_defaults_to_the_key_name(run_robustify, sessions):
    completed = run_robustify("keys", "create", "bob")

    key = completed.stdout.strip().splitlines()[-1]
    with sessions() as session:
        assert authenticate(session, key).name == "bob"


def test_keys_list_shows_id_owner_name_and_prefix(run_robustify, cli_settings, sessions):
    upgrade_database(cli_settings)
    with transaction(sessions) as session:
        created = create_key(session, owner_name="alice", key_name="laptop")

    completed = run_robustify("keys", "list")

    assert completed.returncode == 0, completed.stderr
    row = next(line for line in completed.stdout.splitlines() if created.record.id in line)
    assert "alice" in row and "laptop" in row and created.record.prefix in row
    assert created.key not in completed.stdout  # only a hash is stored: the key can't be shown


def test_revoked_key_no_longer_authenticates(run_robustify, cli_settings, sessions):
    upgrade_database(cli_settings)
    with transaction(sessions) as session:
        created = create_key(session, owner_name="alice", key_name="leaked")

    completed = run_robustify("keys", "revoke", created.record.id)

    assert completed.returncode == 0, completed.stderr
    with sessions() as session, pytest.raises(Unauthorized):
        authenticate(session, created.key)


@pytest.mark.parametrize("cli_settings", ["sqlite"], indirect=True)
def test_revoking_an_unknown_key_exits_1_with_one_clear_line(run_robustify):
    completed = run_robustify("keys", "revoke", "key_doesnotexist")

    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        "error: no API key with id 'key_doesnotexist' (`robustify keys list` shows the ids)"
    )
