"""The group commit's statements as driver SQL, rendered once per backend.

Why not SQLAlchemy Core expressions here: a durable run's final write (checkpoint,
events, the agent turn's messages, status) is on the run's critical path, and with
Core statements most of its time went to SQLAlchemy itself (building the statement,
its cache key, compiled-cache lookup, per-row bind processing), not to the database:
a profile of the final write of a one-step run put the SQLite work at about a quarter
of it. These statements are rendered from the same ``Table`` objects (column names
quoted by the dialect's own preparer, so they follow the schema), once per shape, and
run through :meth:`sqlalchemy.engine.Connection.exec_driver_sql`: still inside the
store's transaction, with driver errors wrapped as SQLAlchemy's (so ``guard`` maps
them as for every other statement).

Values are bound exactly as the Core path binds them: JSON columns get the store's
:func:`~lumos_ray.store._engine.dumps` text (``None`` becomes JSON ``null``; a column
left out stays SQL NULL), cast to ``json`` on PostgreSQL; other columns go as they
are; a value the caller encoded already (:class:`~lumos_ray.store.EncodedJSON`) goes
as its text. A value that is not storable JSON raises ``NotJSONError`` before anything
is sent, which ``guard`` turns into the same clear error as before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table
from sqlalchemy.engine import Dialect

from lumos_ray.store._engine import EncodedJSON, dumps

__all__ = ["BatchSQL", "batch_sql"]

#: Rows per multi-row ``INSERT ... RETURNING`` (SQLite binds at most 32766 values per
#: statement, PostgreSQL 65535; the widest row here has 11 columns).
ROWS_PER_INSERT = 500
#: Keys per ``IN (...)`` list (as RunStore's reads).
KEYS_PER_IN = 500


class BatchSQL:
    """Statements of one backend (``dialect``): texts cached by shape, params as tuples."""

    def __init__(self, dialect: Dialect) -> None:
        self.pg = dialect.name == "postgresql"
        self._quote = dialect.identifier_preparer.quote
        self._ph = "%s" if self.pg else "?"

    # -- rendering (cached: one text per table, columns and row count) ---------------
    def _slot(self, table: Table, col: str) -> str:
        if self.pg and isinstance(table.c[col].type, JSON):
            return f"CAST({self._ph} AS JSON)"
        return self._ph

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one instance per backend, kept for good
    def insert_sql(
        self, table: Table, cols: tuple[str, ...], n_rows: int, returning: tuple[str, ...]
    ) -> str:
        """``INSERT`` of ``n_rows`` rows; with ``returning``: skip rows whose primary
        key exists and return the given columns of the rows inserted."""
        names = ", ".join(self._quote(c) for c in cols)
        row = "(" + ", ".join(self._slot(table, c) for c in cols) + ")"
        sql = f"INSERT INTO {self._quote(table.name)} ({names}) VALUES " + ", ".join([row] * n_rows)
        if returning:
            sql += " ON CONFLICT DO NOTHING RETURNING " + ", ".join(
                self._quote(c) for c in returning
            )
        return sql

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def update_sql(self, table: Table, cols: tuple[str, ...], key: tuple[str, ...]) -> str:
        """``UPDATE`` setting ``cols`` of the row whose ``key`` columns match."""
        sets = ", ".join(f"{self._quote(c)} = {self._slot(table, c)}" for c in cols)
        where = " AND ".join(f"{self._quote(k)} = {self._ph}" for k in key)
        return f"UPDATE {self._quote(table.name)} SET {sets} WHERE {where}"

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def max_seq_sql(self, table: Table, key_col: str, where: tuple[str, ...], n_keys: int) -> str:
        """``SELECT key, max(seq)`` per key of one tenant (and ``where`` columns)."""
        q = self._quote
        conds = [f"{q('tenant_id')} = {self._ph}"]
        conds += [f"{q(w)} = {self._ph}" for w in where]
        conds.append(f"{q(key_col)} IN ({', '.join([self._ph] * n_keys)})")
        return (
            f"SELECT {q(key_col)}, max({q('seq')}) FROM {q(table.name)} "
            f"WHERE {' AND '.join(conds)} GROUP BY {q(key_col)}"
        )

    # -- values --------------------------------------------------------------------
    @staticmethod
    def _values(table: Table, cols: Sequence[str], row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(_json(row[c]) if isinstance(table.c[c].type, JSON) else row[c] for c in cols)

    # -- statements ----------------------------------------------------------------
    def insert_many(self, c: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Insert ``rows`` (all with the first row's keys) in one executemany."""
        if not rows:
            return
        cols = tuple(rows[0])
        sql = self.insert_sql(table, cols, 1, ())
        c.exec_driver_sql(sql, [self._values(table, cols, r) for r in rows])

    def insert_new(
        self,
        c: Connection,
        table: Table,
        key: tuple[str, ...],
        rows: Sequence[dict[str, Any]],
    ) -> set[tuple[Any, ...]]:
        """Insert ``rows``, skipping those whose primary key exists; returns ``key`` of
        each row inserted (``ON CONFLICT DO NOTHING RETURNING``, multi-row)."""
        out: set[tuple[Any, ...]] = set()
        if not rows:
            return out
        cols = tuple(rows[0])
        for i in range(0, len(rows), ROWS_PER_INSERT):
            part = rows[i : i + ROWS_PER_INSERT]
            sql = self.insert_sql(table, cols, len(part), key)
            params = tuple(v for r in part for v in self._values(table, cols, r))
            out.update(tuple(r) for r in c.exec_driver_sql(sql, params).fetchall())
        return out

    def update_many(
        self,
        c: Connection,
        table: Table,
        cols: tuple[str, ...],
        key: tuple[str, ...],
        rows: Sequence[dict[str, Any]],
    ) -> None:
        """Set ``cols`` of each row (matched on ``key``) in one executemany."""
        if not rows:
            return
        sql = self.update_sql(table, cols, key)
        params = [self._values(table, cols, r) + tuple(r[k] for k in key) for r in rows]
        c.exec_driver_sql(sql, params)

    def max_seqs(
        self,
        c: Connection,
        table: Table,
        key_col: str,
        tenant: str,
        keys: Iterable[str],
        where: dict[str, str] | None = None,
    ) -> dict[str, int]:
        """The last sequence number in use per key (0 when none), in the transaction."""
        where = where or {}
        wcols = tuple(sorted(where))
        wvals = tuple(where[w] for w in wcols)
        ordered = sorted(set(keys))
        last = dict.fromkeys(ordered, 0)
        for i in range(0, len(ordered), KEYS_PER_IN):
            part = ordered[i : i + KEYS_PER_IN]
            sql = self.max_seq_sql(table, key_col, wcols, len(part))
            rows: Any = c.exec_driver_sql(sql, (tenant, *wvals, *part)).fetchall()
            for key, seq in rows:
                last[str(key)] = int(seq or 0)
        return last


def _json(value: Any) -> str:
    return value.text if isinstance(value, EncodedJSON) else dumps(value)


_by_backend: dict[str, BatchSQL] = {}


def batch_sql(c: Connection) -> BatchSQL:
    """The statements for ``c``'s backend (one instance per backend per process, so
    every store of a backend shares the rendered texts)."""
    found = _by_backend.get(c.dialect.name)
    if found is None:
        found = _by_backend.setdefault(c.dialect.name, BatchSQL(c.dialect))
    return found
