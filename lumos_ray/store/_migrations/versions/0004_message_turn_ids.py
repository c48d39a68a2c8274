"""Agent turns carry an id: a turn retried after its actor died is answered from the
store instead of being run (and appended) a second time.

Additive only: one nullable column on ``messages`` (rows written before it have none).

Revision ID: 0004_message_turn_ids
Revises: 0003_schedules
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_message_turn_ids"
down_revision = "0003_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("turn_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("turn_id")
