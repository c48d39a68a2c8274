"""Scheduled runs: one table, keyed by tenant.

Additive only: no existing table or key changes.

Revision ID: 0003_schedules
Revises: 0002_platform
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_schedules"
down_revision = "0002_platform"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A frozen copy of the table at this revision (later edits of _schema.py must not
    # change what this migration creates).
    op.create_table(
        "schedules",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("input", sa.JSON),
        sa.Column("cron", sa.String(200)),
        sa.Column("every_s", sa.Float),
        sa.Column("catchup", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("next_fire", sa.Float, nullable=False),
        sa.Column("fired", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_schedules"),
    )
    op.create_index(
        "ix_schedules_tenant_id_status_next_fire",
        "schedules",
        ["tenant_id", "status", "next_fire"],
    )


def downgrade() -> None:
    op.drop_table("schedules")
