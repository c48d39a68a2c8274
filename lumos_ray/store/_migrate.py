"""Bringing a database to the current schema when a store opens.

Opening a store upgrades it to the newest migration (``alembic upgrade head`` through
Alembic's Python API, with the migrations shipped inside this package), so a new
release never needs a separate migration step. Several processes open the store at
once when a cluster starts (the runner, agent actors, the CLI), so the upgrade runs
under a lock: SQLite's write lock (``BEGIN IMMEDIATE``) or a PostgreSQL advisory
lock held for the transaction. The check that comes first needs no lock, so opening
an up-to-date store costs one query, and no Alembic import: Alembic (with Mako and
Pygments behind it) takes ~0.5 s to import, paid by every new agent actor before its
first turn when it was imported here at module level. :data:`HEAD_REVISION` names the
newest migration for that check (a unit test keeps it equal to Alembic's head).

A database written by a newer release (a revision this code does not know) is
refused with a StoreError rather than used with a schema we do not understand. A
SQLite file from before migrations is copied to ``<file>.pre-migration.bak`` before
it is converted (see ``versions/0001_tenant_keyed_schema.py`` for what changes).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from lumos_ray.store._errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "current_revision",
    "head_revision",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "_migrations"
#: Our own version table, so a database shared with an application that uses Alembic
#: itself (``alembic_version``) keeps both histories apart.
VERSION_TABLE = "lumos_store_version"
#: The newest revision in ``_migrations/versions`` (update it with each new migration).
HEAD_REVISION = "0004_message_turn_ids"
# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises upgrades.
_PG_LOCK_KEY = 0x6C756D6F73  # "lumos"
_LEGACY_TABLES = ("runs", "checkpoints", "events", "messages", "working_memory")


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest revision this release knows (read from the migration scripts)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def current_revision(conn: Connection) -> str | None:
    """The database's revision, or None when it has never been migrated."""
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def upgrade(engine: Engine, masked_url: str, sqlite_path: Path | None = None) -> None:
    """Upgrade the database behind ``engine`` to the head revision (a no-op when it is
    there already). ``masked_url`` is only for messages."""
    with engine.connect() as conn:
        try:
            at_head = conn.execute(
                text(f"SELECT version_num FROM {VERSION_TABLE}")
            ).scalars().all() == [HEAD_REVISION]
        except Exception:  # no version table yet: a new or a pre-migration database
            at_head = False
        conn.rollback()
    if at_head:
        return
    from alembic import command
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    head = script.get_current_head()
    with engine.connect() as conn:
        conn = conn.execution_options(lumos_write=True)  # SQLite: BEGIN IMMEDIATE
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            current = current_revision(conn)  # again: another process may have done it
            if current == head:
                return
            if current is not None and _unknown(script, current):
                raise StoreError(
                    f"The run store {masked_url} has schema revision {current!r}, which "
                    "this version of lumos_ray does not know (it was written by a newer "
                    "release).",
                    fix="Upgrade lumos_ray on this machine to the release that wrote the "
                    "store, or point LUMOS_STORE_URL at another database.",
                )
            if current is None and sqlite_path is not None:
                names = set(inspect(conn).get_table_names())
                if names & set(_LEGACY_TABLES):
                    _backup_sqlite(sqlite_path, masked_url)
            cfg = _config()
            cfg.attributes["connection"] = conn
            log.info("Upgrading run store %s from %s to %s", masked_url, current, head)
            command.upgrade(cfg, "head")


def _unknown(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is None
    except Exception:  # alembic raises for ids it cannot resolve
        return True


def _backup_sqlite(path: Path, masked_url: str) -> None:
    """Copy a pre-migration SQLite store aside (SQLite's online backup: consistent
    even with WAL) before it is converted, so nothing is lost if anything goes wrong."""
    target = path.with_name(path.name + ".pre-migration.bak")
    try:
        src = sqlite3.connect(str(path))
        try:
            dst = sqlite3.connect(str(target))
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise StoreError(
            f"The run store {masked_url} is from a release before schema migrations and "
            f"could not be backed up to {target} before converting it ({exc}).",
            fix=f"Make {target.parent} writable (or copy the file aside yourself and "
            "retry), or point LUMOS_STORE_URL at a new database.",
        ) from None
    log.warning("Run store %s is from an older release; backed it up to %s", masked_url, target)
