"""pytest-alembic's checks of the migrations, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pytest_alembic import Config as AlembicTestConfig
from pytest_alembic.tests import (  # noqa: F401  (collected as tests of this module)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import JSON, String, column, create_engine, select, table

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


def test_jobs_failed_before_the_one_error_table_carry_its_codes(alembic_runner, alembic_engine):
    alembic_runner.migrate_up_to("0001")
    now = datetime.now(UTC)
    alembic_runner.insert_into("owners", {"id": "own_1", "name": "team", "created_at": now})
    for job_id, code in [("job_1", "model_load_error"), ("job_2", "dataset_error"),
                         ("job_3", "cancelled")]:  # fmt: skip
        alembic_runner.insert_into("jobs", {
            "id": job_id, "owner_id": "own_1", "kind": "harden", "status": "failed",
            "dataset": "builtin:digits", "config": {}, "progress": {}, "metrics": {},
            "manifest": {}, "attempts": 1, "cancel_requested": False, "created_at": now,
            "updated_at": now, "error": {"code": code, "message": "why"},
        })  # fmt: skip

    alembic_runner.migrate_up_to("0002")
    assert _codes(alembic_engine) == {
        "job_1": "invalid_model", "job_2": "invalid_dataset", "job_3": "cancelled",
    }  # fmt: skip

    alembic_runner.migrate_down_to("0001")
    assert _codes(alembic_engine)["job_1"] == "model_load_error"


def _codes(engine) -> dict[str, str]:
    jobs = table("jobs", column("id", String), column("error", JSON))
    with engine.connect() as connection:
        return {row.id: row.error["code"] for row in connection.execute(select(jobs))}
