"""The group commit's statements: SQLAlchemy Core, compiled once per backend and shape.

Why not plain Core execution here: a durable run's final write (checkpoint, events,
the agent turn's messages, status) is on the run's critical path, and with Core
statements executed the usual way most of its time went to SQLAlchemy itself (building
the statement, its cache key, compiled-cache lookup, per-row bind processing), not to
the database: a profile of the final write of a one-step run put the SQLite work at
about a quarter of it. So each statement is built from the schema's ``Table`` with
Core (the dialect's own ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, typed bind
parameters: PostgreSQL's compiler casts JSON binds), compiled once per shape
(``stmt.compile(dialect=...)``: SQLAlchemy's compiler stays the one source of SQL), and
run through :meth:`sqlalchemy.engine.Connection.exec_driver_sql` with the parameters
in the compiled statement's order: still inside the store's transaction, with driver
errors wrapped as SQLAlchemy's (so ``guard`` maps them as for every other statement).

Values are bound exactly as the Core path binds them: JSON columns get the store's
:func:`~lumos_ray.store._engine.dumps` text (``None`` becomes JSON ``null``; a column
left out stays SQL NULL); other columns go as they are; a value the caller encoded
already (:class:`~lumos_ray.store.EncodedJSON`) goes as its text. A value that is not
storable JSON raises ``NotJSONError`` before anything is sent, which ``guard`` turns
into the same clear error as before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from lumos_ray.store._engine import EncodedJSON, dumps

__all__ = ["BatchSQL", "batch_sql"]

#: Rows per multi-row ``INSERT ... RETURNING`` (SQLite binds at most 32766 values per
#: statement, PostgreSQL 65535; the widest row here has 11 columns).
ROWS_PER_INSERT = 500
#: Keys per ``IN (...)`` list (as RunStore's reads).
KEYS_PER_IN = 500


class Compiled:
    """One compiled statement: its SQL text and how a flat list of values (in the
    order its bind parameters were made) becomes the driver's parameters (a tuple in
    the text's order for a positional paramstyle, a dict for a named one)."""

    __slots__ = ("direct", "names", "order", "sql")

    def __init__(self, stmt: ClauseElement, dialect: Dialect, names: Sequence[str]) -> None:
        compiled = stmt.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # a DML/SELECT statement's compiler
        self.sql = compiled.string
        self.names: tuple[str, ...] | None = None  # a named paramstyle: dict keys
        #: Positional: value index per slot of the text (None: the made order).
        self.order: tuple[int, ...] | None = None
        if compiled.positional:
            index = {n: i for i, n in enumerate(names)}
            order = tuple(index[n] for n in compiled.positiontup or ())
            if len(order) != len(names):
                raise AssertionError(f"compiled binds {compiled.positiontup} != {names}")
            if order != tuple(range(len(names))):
                self.order = order
        else:
            self.names = tuple(names)
        #: The values' tuple is the parameters as it is (positional, the made order).
        self.direct = self.names is None and self.order is None

    def params(self, values: tuple[Any, ...]) -> Any:
        if self.direct:
            return values
        if self.names is not None:
            return dict(zip(self.names, values, strict=True))
        assert self.order is not None
        return tuple(values[i] for i in self.order)


class BatchSQL:
    """Statements of one backend (``dialect``), compiled once per shape."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert

    # -- compiling (cached: one statement per table, columns and row count) ----------
    @staticmethod
    def _bind(table: Table, col: str, name: str) -> Any:
        return bindparam(name, type_=table.c[col].type)

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one instance per backend, kept for good
    def insert_sql(
        self, table: Table, cols: tuple[str, ...], n_rows: int, returning: tuple[str, ...]
    ) -> Compiled:
        """``INSERT`` of ``n_rows`` rows; with ``returning``: skip rows whose primary
        key exists and return the given columns of the rows inserted. Values: row by
        row, ``cols`` in order."""
        names = [f"r{i}_{c}" for i in range(n_rows) for c in cols]
        rows = [{c: self._bind(table, c, f"r{i}_{c}") for c in cols} for i in range(n_rows)]
        stmt: Any = self._insert(table).values(rows if n_rows > 1 else rows[0])
        if returning:
            stmt = stmt.on_conflict_do_nothing().returning(*(table.c[k] for k in returning))
        return Compiled(stmt, self.dialect, names)

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def update_sql(self, table: Table, cols: tuple[str, ...], key: tuple[str, ...]) -> Compiled:
        """``UPDATE`` setting ``cols`` of the row whose ``key`` columns match. Values:
        ``cols`` then ``key``, in order."""
        stmt = (
            update(table)
            .where(and_(*(table.c[k] == self._bind(table, k, f"k_{k}") for k in key)))
            .values({c: self._bind(table, c, f"v_{c}") for c in cols})
        )
        return Compiled(stmt, self.dialect, [*(f"v_{c}" for c in cols), *(f"k_{k}" for k in key)])

    @functools.lru_cache(maxsize=256)  # noqa: B019
    def max_seq_sql(
        self, table: Table, key_col: str, where: tuple[str, ...], n_keys: int
    ) -> Compiled:
        """``SELECT key, max(seq)`` per key of one tenant (and ``where`` columns).
        Values: the tenant, ``where`` in order, then the keys."""
        keys = [self._bind(table, key_col, f"k{i}") for i in range(n_keys)]
        stmt = (
            select(table.c[key_col], func.max(table.c.seq))
            .where(
                table.c.tenant_id == self._bind(table, "tenant_id", "tenant"),
                *(table.c[w] == self._bind(table, w, f"w_{w}") for w in where),
                table.c[key_col].in_(keys),
            )
            .group_by(table.c[key_col])
        )
        names = ["tenant", *(f"w_{w}" for w in where), *(f"k{i}" for i in range(n_keys))]
        return Compiled(stmt, self.dialect, names)

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
        st = self.insert_sql(table, cols, 1, ())
        if st.direct:
            c.exec_driver_sql(st.sql, [self._values(table, cols, r) for r in rows])
        else:
            c.exec_driver_sql(st.sql, [st.params(self._values(table, cols, r)) for r in rows])

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
            st = self.insert_sql(table, cols, len(part), key)
            values = tuple(v for r in part for v in self._values(table, cols, r))
            out.update(tuple(r) for r in c.exec_driver_sql(st.sql, st.params(values)).fetchall())
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
        st = self.update_sql(table, cols, key)
        params = [st.params(self._values(table, cols, r) + tuple(r[k] for k in key)) for r in rows]
        c.exec_driver_sql(st.sql, params)

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
            st = self.max_seq_sql(table, key_col, wcols, len(part))
            rows: Any = c.exec_driver_sql(st.sql, st.params((tenant, *wvals, *part))).fetchall()
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
