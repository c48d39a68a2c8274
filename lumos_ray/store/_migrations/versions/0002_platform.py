"""Platform tables: tenants, users, API keys (hashed), usage metering, plan quota
counters, agent-slot leases and the hash-chained audit log.

Additive only: no existing table or key changes. Every new primary key starts with
``tenant_id``; ``api_keys.key_id`` is also unique on its own, because a presented key
names only its id.

Revision ID: 0002_platform
Revises: 0001_tenant_keyed
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_platform"
down_revision = "0001_tenant_keyed"
branch_labels = None
depends_on = None

_TABLES = (
    "audit_heads",
    "audit_log",
    "agent_slots",
    "quota_usage",
    "usage_daily",
    "api_keys",
    "users",
    "tenants",
)


def upgrade() -> None:
    # A frozen copy of the tables at this revision (later edits of _schema.py must not
    # change what this migration creates).
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("plan", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenants"),
    )
    op.create_table(
        "users",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_users"),
    )
    op.create_table(
        "api_keys",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("user_name", sa.String(200)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.PrimaryKeyConstraint("tenant_id", "key_id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_key_id", "api_keys", ["key_id"], unique=True)
    op.create_table(
        "usage_daily",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("embedding_inputs", sa.BigInteger, nullable=False),
        sa.Column("agent_seconds", sa.Float, nullable=False),
        sa.Column("storage_bytes", sa.BigInteger),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", name="pk_usage_daily"),
    )
    op.create_table(
        "quota_usage",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("used", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "period", "metric", name="pk_quota_usage"),
    )
    op.create_table(
        "agent_slots",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("slot_id", sa.String(32), nullable=False),
        sa.Column("holder", sa.String(200)),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "slot_id", name="pk_agent_slots"),
    )
    op.create_index(
        "ix_agent_slots_tenant_id_expires_at", "agent_slots", ["tenant_id", "expires_at"]
    )
    op.create_table(
        "audit_log",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(500), nullable=False),
        sa.Column("detail", sa.JSON),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name="pk_audit_log"),
    )
    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_audit_heads"),
    )


def downgrade() -> None:
    for name in _TABLES:
        op.drop_table(name)
