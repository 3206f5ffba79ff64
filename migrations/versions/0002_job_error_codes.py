"""job error codes: failed jobs carry the API's codes (model_load_error -> invalid_model,
dataset_error -> invalid_dataset), so a job failed before the change reads like one after it

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 13:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The codes the one error table (core.service.errors) replaced; the mapping is one to one.
RENAMED = {"model_load_error": "invalid_model", "dataset_error": "invalid_dataset"}

jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("error", sa.JSON))


def _rename_codes(mapping: dict[str, str]) -> None:
    """Rewrite each failed job's error code by `mapping` (JSON, read and written in Python:
    the same on SQLite and PostgreSQL)."""
    connection = op.get_bind()
    rows = connection.execute(sa.select(jobs.c.id, jobs.c.error).where(jobs.c.error.is_not(None)))
    for job_id, error in rows.all():
        if isinstance(error, dict) and error.get("code") in mapping:
            renamed = {**error, "code": mapping[error["code"]]}
            connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(error=renamed))


def upgrade() -> None:
    _rename_codes(RENAMED)


def downgrade() -> None:
    _rename_codes({new: old for old, new in RENAMED.items()})
