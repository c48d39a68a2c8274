"""Engines for the two backends, and turning driver errors into StoreErrors.

SQLite: WAL (the runner, agent actors and the CLI on one node read while one writes),
a 10 s busy timeout, and explicit transactions: reads ``BEGIN`` (deferred), writes
``BEGIN IMMEDIATE`` so a writer takes the write lock before it reads the next
sequence number (with Python's default handling two writers could read the same
number, and a deferred reader that later writes fails with "database is locked"
instead of waiting).

PostgreSQL (psycopg 3): a bounded connect timeout so an unreachable server fails
at open instead of hanging, ``pool_pre_ping`` so a server restart costs one retry
instead of a failed step, and reads in autocommit (one round trip, no BEGIN/ROLLBACK).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)

from lumos_ray._files import FILE_MODE, is_lumos_home, private_dir, private_file, tighten
from lumos_ray.errors import InputValidationError
from lumos_ray.store._errors import StoreError
from lumos_ray.store._url import CONNECT_TIMEOUT_S, StoreURL

__all__ = [
    "MAX_VALUE_BYTES",
    "EncodedJSON",
    "NotJSONError",
    "connect_error",
    "dumps",
    "encode_json",
    "guard",
    "make_engines",
]

#: Largest JSON value (one step output, event, message, definition...) the store
#: accepts. Bigger values belong in files or object storage, referenced by path.
MAX_VALUE_BYTES = 32 * 1024 * 1024
_SQLITE_BUSY_MS = 10_000


def dumps(value: Any) -> str:
    """The store's JSON encoder: strict JSON (NaN/Infinity are refused: PostgreSQL's
    json type rejects them, so SQLite must too) and bounded in size."""
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise NotJSONError(str(exc)) from None
    if len(text) > MAX_VALUE_BYTES:
        raise NotJSONError(
            f"value is {len(text)} bytes of JSON; the store keeps at most {MAX_VALUE_BYTES}"
        )
    return text


class EncodedJSON:
    """A value already encoded by :func:`encode_json`: the store writes ``text`` as it
    is (a caller that had to check a value up front does not pay for encoding it twice)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def encode_json(value: Any, what: str) -> EncodedJSON:
    """``value`` as the store will keep it, or the store's InputValidationError now (not
    strict JSON, or over the size limit), before anything depends on it."""
    try:
        return EncodedJSON(dumps(value))
    except NotJSONError as exc:
        raise InputValidationError(
            f"{what} is not storable JSON: {exc}", fix=_NOT_JSON_FIX
        ) from None


_NOT_JSON_FIX = (
    "Store JSON data only (dicts, lists, strings, numbers, booleans, None; no NaN/Infinity, "
    "bytes or objects), under the size limit; put big payloads in files and store their "
    "paths."
)


class NotJSONError(ValueError):
    """Raised by :func:`dumps`. Depending on the driver it surfaces raw (psycopg) or
    wrapped in a StatementError (pysqlite); :func:`guard` handles both."""


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's begin event issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
    cur.close()


def _private_sqlite_file(target: StoreURL) -> None:
    """Create the database file ``0600`` (its missing directories ``0700``) before
    SQLite opens it, and tighten an existing one: it holds every run's input, output
    and events. SQLite creates the ``-wal`` and ``-shm`` files with the database file's
    mode, so they follow; ones left by an older release are tightened too."""
    path = target.sqlite_path
    assert path is not None
    try:
        # the default store lives in LUMOS_HOME, lumos's own folder: tightened too
        private_dir(path.parent, tighten_existing=is_lumos_home(path.parent))
        private_file(path)
        for suffix in ("-wal", "-shm"):
            tighten(path.with_name(path.name + suffix), FILE_MODE)
    except OSError as exc:
        raise connect_error(exc, target) from None


def _sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get("lumos_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engines(
    target: StoreURL, connect_timeout_s: float = CONNECT_TIMEOUT_S
) -> tuple[Engine, Engine]:
    """(engine for writes, engine for reads); they share one connection pool."""
    if target.backend == "sqlite":
        if target.sqlite_path is not None:
            _private_sqlite_file(target)
        engine = create_engine(
            target.url,
            json_serializer=dumps,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine, engine
    connect_args: dict[str, Any] = {"application_name": "lumos_ray"}
    if "connect_timeout" not in target.url.query:
        connect_args["connect_timeout"] = max(1, round(connect_timeout_s))
    engine = create_engine(
        target.url,
        json_serializer=dumps,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=30,
        connect_args=connect_args,
    )
    return engine, engine.execution_options(isolation_level="AUTOCOMMIT")


def _reason(exc: BaseException, target: StoreURL) -> str:
    """The driver's first line, without the password should a driver ever echo it."""
    orig = getattr(exc, "orig", None) or exc
    text = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:500]
    if target.url.password:
        text = text.replace(str(target.url.password), "***")
    return text


def connect_error(exc: BaseException, target: StoreURL) -> StoreError:
    """The StoreError for a store that cannot be reached or opened."""
    if target.backend == "sqlite":
        fix = (
            f"Check that {target.sqlite_path} is a file (not a directory) in a writable "
            "directory, or set LUMOS_STORE_URL to another sqlite:////ABSOLUTE/PATH.db."
        )
    else:
        fix = (
            "Check that the PostgreSQL server is running and reachable from this machine "
            "(host, port, firewall), that the user, password and database in "
            "LUMOS_STORE_URL are right (create the database with `createdb`), and retry. "
            f"Connecting gives up after {CONNECT_TIMEOUT_S} s (connect_timeout=N in the "
            "URL's query changes that)."
        )
    return StoreError(f"Cannot open the run store {target.masked}: {_reason(exc, target)}", fix=fix)


@contextmanager
def guard(target: StoreURL) -> Iterator[None]:
    """Map driver failures to errors with a message and a fix.

    Lost connections and locks become StoreErrors naming the (masked) URL; a value
    that is not JSON becomes an InputValidationError. IntegrityError passes through
    unchanged: callers use it (a run id that exists already)."""
    try:
        yield
    except IntegrityError:
        raise
    except (OperationalError, InterfaceError) as exc:
        raise StoreError(
            f"The run store {target.masked} failed: {_reason(exc, target)}",
            fix="Check that the database is reachable and not full or locked by "
            "another program, then retry.",
        ) from None
    except (StatementError, NotJSONError) as exc:
        cause = exc.orig if isinstance(exc, StatementError) else exc
        if isinstance(exc, DBAPIError) or not isinstance(cause, NotJSONError):
            raise
        raise InputValidationError(
            f"A value for the run store is not storable JSON: {cause}", fix=_NOT_JSON_FIX
        ) from None
