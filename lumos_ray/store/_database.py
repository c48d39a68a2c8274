"""A handle on the store's database for code that keeps its own tables there.

:class:`~lumos_ray.store.RunStore` is the API for runs, events and threads. The
platform (tenants, keys, metering, audit) keeps its tables in the same database and
needs the same engine setup (WAL and ``BEGIN IMMEDIATE`` on SQLite, bounded connects
and pre-ping on PostgreSQL, strict JSON, errors mapped to StoreErrors with the
password masked) and the same migrations, but writes its own statements. This is
that shared part, so nothing above the store reaches into its private modules.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.dialects import postgresql, sqlite

from lumos_ray.store import _migrate
from lumos_ray.store._engine import connect_error, guard, make_engines
from lumos_ray.store._errors import StoreError
from lumos_ray.store._url import CONNECT_TIMEOUT_S, parse_store_url

__all__ = ["Database", "open_database"]


class Database:
    """One database (URL), opened and upgraded to this release's schema.

    Not bound to a tenant: callers put the tenant in every statement themselves (the
    platform's tables all start their keys with it)."""

    def __init__(self, url: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self._target = parse_store_url(url)
        #: The URL as it may be shown (password masked).
        self.url = self._target.masked
        #: ``"sqlite"`` or ``"postgresql"``.
        self.backend = self._target.backend
        if self._target.sqlite_path is not None:
            try:
                self._target.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"Cannot create the directory of the run store {self.url}: {exc.strerror}.",
                    fix="Set LUMOS_HOME (or LUMOS_STORE_URL) to a writable location.",
                ) from None
        self._engine, self._reader = make_engines(self._target, connect_timeout_s)
        try:
            _migrate.upgrade(self._engine, self.url, self._target.sqlite_path)
        except StoreError:
            self._engine.dispose()
            raise
        except Exception as exc:
            self._engine.dispose()
            raise connect_error(exc, self._target) from None

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, committed when the block ends without an exception
        (SQLite: takes the database's write lock up front, so a read inside it sees
        what no other writer can change before the commit)."""
        with guard(self._target), self._engine.connect() as c:
            c.execution_options(lumos_write=True)
            with c.begin():
                yield c

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (autocommit on PostgreSQL)."""
        with guard(self._target), self._reader.connect() as c:
            yield c

    def lock(self, c: Connection, names: Iterable[str]) -> None:
        """Serialise writers of the same ``names`` until the transaction ends.

        PostgreSQL: advisory transaction locks, taken in one global order so two
        writers never deadlock. SQLite: a no-op (the write lock already serialises)."""
        if self.backend != "postgresql":
            return
        keys = sorted(set(names))
        if keys:
            c.execute(
                text(
                    "SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT "
                    "hashtextextended(k, 0) AS h FROM unnest(CAST(:keys AS text[])) AS k "
                    "ORDER BY h) AS s"
                ),
                {"keys": keys},
            )

    def upsert(self) -> Any:
        """The dialect's ``insert`` (with ``on_conflict_do_update/_nothing``)."""
        return postgresql.insert if self.backend == "postgresql" else sqlite.insert

    def close(self) -> None:
        """Release the connections (only for handles you constructed yourself)."""
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url!r})"


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def open_database(url: str) -> Database:
    """The process-wide :class:`Database` for ``url`` (one connection pool per URL per
    process). Failing to open raises a StoreError each time (nothing is cached)."""
    with _lock:
        db = _databases.get(url)
        if db is None:
            db = _databases[url] = Database(url)
        return db
