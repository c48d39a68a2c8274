"""Database tools: SQL on SQLite files inside the workspace.

Read-only by default (the file is opened with ``mode=ro``); writes need
``settings.sql.allow_write``. ATTACH is always denied (it would open files outside
the workspace) and extensions are never loaded.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._builtins._safety import ctx_or_default, resolve_in_workspace
from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._tool import tool

__all__ = ["TOOLS", "sql_query", "sql_schema"]


def _authorizer(action: int, arg1: Any, arg2: Any, dbname: Any, source: Any) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _connect(p: Path, write: bool) -> sqlite3.Connection:
    if not write and not p.is_file():
        raise ToolError(f"no such database file in the workspace: {p.name!r}")
    mode = "rwc" if write else "ro"
    try:
        conn = sqlite3.connect(f"{p.as_uri()}?mode={mode}", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise ToolError(f"cannot open database: {exc}") from None
    conn.set_authorizer(_authorizer)
    return conn


@tool
def sql_query(
    database: str,
    query: str,
    params: list[Any] | None = None,
    max_rows: int = 200,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Run one SQL statement on a SQLite database file in the workspace.

    Read-only unless the run sets settings.sql.allow_write. Use ? placeholders with
    params rather than pasting values into the query.

    Args:
        database: SQLite file path relative to the workspace root.
        query: One SQL statement.
        params: Values bound to the ? placeholders, in order.
        max_rows: Return at most this many rows (the result says if it was truncated).
    """
    allow_write = bool(ctx_or_default(ctx).setting("sql", "allow_write", False))
    conn = _connect(resolve_in_workspace(ctx, database), allow_write)
    try:
        cur = conn.execute(query, params or [])
        if cur.description is None:
            conn.commit()
            return {"rows_affected": cur.rowcount, "lastrowid": cur.lastrowid}
        columns = [d[0] for d in cur.description]
        rows = cur.fetchmany(max_rows + 1)
        truncated = len(rows) > max_rows
        return {"columns": columns, "rows": [list(r) for r in rows[:max_rows]],
                "row_count": min(len(rows), max_rows), "truncated": truncated}  # fmt: skip
    except sqlite3.DatabaseError as exc:
        msg = str(exc)
        if "readonly" in msg or "read-only" in msg:
            raise ToolNotAllowedError(
                "the database is read-only for this run; set settings.sql.allow_write to "
                "allow writes"
            ) from None
        if "not authorized" in msg:
            raise ToolNotAllowedError(f"statement not allowed: {msg} (ATTACH is denied)") from None
        raise ToolError(f"SQL error: {msg}") from None
    except sqlite3.ProgrammingError as exc:
        raise ToolError(f"SQL error: {exc}") from None
    finally:
        conn.close()


@tool
def sql_schema(database: str, ctx: ToolContext | None = None) -> dict[str, Any]:
    """List the tables of a SQLite database in the workspace with their columns.

    Args:
        database: SQLite file path relative to the workspace root.
    """
    conn = _connect(resolve_in_workspace(ctx, database), write=False)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table','view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        out = {}
        for t in tables:
            cols = conn.execute(f"PRAGMA table_info({_quote(t)})").fetchall()
            out[t] = [
                {"name": c[1], "type": c[2], "not_null": bool(c[3]), "primary_key": bool(c[5])}
                for c in cols
            ]
        return {"tables": out}
    except sqlite3.DatabaseError as exc:
        raise ToolError(f"SQL error: {exc}") from None
    finally:
        conn.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


TOOLS = [sql_query, sql_schema]
