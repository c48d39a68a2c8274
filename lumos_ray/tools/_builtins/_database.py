"""Database tools: SQL on SQLite files inside the workspace.

Read-only by default (the file is opened with ``mode=ro``); writes need
``settings.sql.allow_write``. ATTACH is always denied (it would open files outside
the workspace) and extensions are never loaded.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._builtins._safety import ctx_or_default, resolve_in_workspace
from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._tool import tool

__all__ = ["TOOLS", "sql_query", "sql_schema"]

#: Default and largest wall-clock seconds one statement may run (``settings.sql.timeout_s``).
_TIMEOUT_S = 10.0
_MAX_TIMEOUT_S = 120.0
#: Largest string/blob a statement may build, rows and characters a result may hold.
_MAX_VALUE_BYTES = 10_000_000
_MAX_ROWS = 10_000
_MAX_RESULT_CHARS = 2_000_000


def _bound(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Stop the statement once ``timeout_s`` has passed (a recursive CTE with no end
    would otherwise run forever, holding a tool thread); cap value sizes."""
    deadline = time.monotonic() + timeout_s
    # Called every 10k virtual-machine instructions: non-zero aborts the statement.
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)


def _cell_chars(v: Any) -> int:
    return len(v) if isinstance(v, str | bytes) else 8


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
    c = ctx_or_default(ctx)
    allow_write = bool(c.setting("sql", "allow_write", False))
    timeout_s = min(float(c.setting("sql", "timeout_s", _TIMEOUT_S)), _MAX_TIMEOUT_S)
    max_rows = max(0, min(max_rows, _MAX_ROWS))
    conn = _connect(resolve_in_workspace(ctx, database), allow_write)
    _bound(conn, timeout_s)
    try:
        cur = conn.execute(query, params or [])
        if cur.description is None:
            conn.commit()
            return {"rows_affected": cur.rowcount, "lastrowid": cur.lastrowid}
        columns = [d[0] for d in cur.description]
        rows: list[list[Any]] = []
        chars = 0
        truncated = False
        for r in iter(cur.fetchone, None):
            chars += sum(_cell_chars(v) for v in r)
            if len(rows) >= max_rows or chars > _MAX_RESULT_CHARS:
                truncated = True
                break
            rows.append(list(r))
        return {"columns": columns, "rows": rows, "row_count": len(rows),
                "truncated": truncated}  # fmt: skip
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise ToolNotAllowedError(
                f"the statement ran longer than {timeout_s:g} s and was stopped (an endless "
                "recursive CTE?). Add a LIMIT or a termination condition; "
                "settings.sql.timeout_s raises the limit."
            ) from None
        raise _sql_error(exc) from None
    except sqlite3.DatabaseError as exc:
        raise _sql_error(exc) from None
    except sqlite3.ProgrammingError as exc:
        raise ToolError(f"SQL error: {exc}") from None
    finally:
        conn.close()


def _sql_error(exc: sqlite3.DatabaseError) -> ToolError:
    msg = str(exc)
    if "readonly" in msg or "read-only" in msg:
        return ToolNotAllowedError(
            "the database is read-only for this run; set settings.sql.allow_write to allow writes"
        )
    if "not authorized" in msg:
        return ToolNotAllowedError(f"statement not allowed: {msg} (ATTACH is denied)")
    if "too big" in msg:
        return ToolNotAllowedError(
            f"SQL error: {msg} (values are limited to {_MAX_VALUE_BYTES} bytes)"
        )
    return ToolError(f"SQL error: {msg}")


@tool
def sql_schema(database: str, ctx: ToolContext | None = None) -> dict[str, Any]:
    """List the tables of a SQLite database in the workspace with their columns.

    Args:
        database: SQLite file path relative to the workspace root.
    """
    conn = _connect(resolve_in_workspace(ctx, database), write=False)
    _bound(conn, _TIMEOUT_S)
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
