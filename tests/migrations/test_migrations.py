"""pytest-alembic's checks of the migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from pytest_alembic import Config as AlembicTestConfig
from pytest_alembic.tests import (  # noqa: F401  (collected as tests of this module)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import create_engine

from core.service.migrate import MIGRATIONS


@pytest.fixture()
def alembic_config() -> AlembicTestConfig:
    return AlembicTestConfig(config_options={"script_location": str(MIGRATIONS)})


@pytest.fixture(params=["sqlite", "postgresql"])
def alembic_engine(request, tmp_path):
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
    else:
        engine = create_engine(request.getfixturevalue("postgres_database"))
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    yield engine
    engine.dispose()
