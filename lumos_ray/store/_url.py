"""Store URLs: which ones are supported, how they are checked, how they are shown.

Two backends are supported and tested: SQLite (the embedded default, one file on
one machine) and PostgreSQL through psycopg 3 (for clusters). Anything else is
refused up front with a message that says what to write instead, rather than failing
later inside a driver with a message about a module name.

A URL may carry a password, so every message uses :func:`mask_url`; nothing in this
package prints a raw URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from lumos_ray.store._errors import StoreError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_URL_LEN",
    "StoreURL",
    "mask_url",
    "parse_store_url",
]

#: How long opening a PostgreSQL store waits for the server before it gives up. An
#: unreachable server fails at open with a StoreError within about this bound (plus
#: name resolution), instead of hanging the first run.
CONNECT_TIMEOUT_S = 10
#: Longer URLs are refused: nothing legitimate needs more, and it bounds messages.
MAX_URL_LEN = 2000

_FIX_URL = (
    "Set LUMOS_STORE_URL (or LumosSettings.store_url) to sqlite:////ABSOLUTE/PATH/runs.db "
    "or postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE, or leave it unset for "
    "sqlite under LUMOS_HOME."
)
_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def mask_url(url: str | URL) -> str:
    """``url`` with any password replaced by ``***`` (also for URLs that do not parse)."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return _PASSWORD_RE.sub(r"\1***@", str(url))[:MAX_URL_LEN]


@dataclass(frozen=True)
class StoreURL:
    """A checked store URL: the SQLAlchemy URL to connect with and what it is."""

    url: URL
    backend: str  # "sqlite" | "postgresql"
    sqlite_path: Path | None = None  # the database file, for SQLite

    @property
    def masked(self) -> str:
        """The URL as it may be shown: password replaced by ``***``."""
        return mask_url(self.url)


def parse_store_url(raw: str) -> StoreURL:
    """Check ``raw`` and normalise it; a StoreError says what is wrong and the fix.

    ``postgresql://`` and ``postgres://`` mean psycopg 3 (the driver we ship and
    test), so the common spellings from other tools work unchanged."""
    if not isinstance(raw, str) or not raw.strip():
        raise StoreError("The run store URL is empty.", fix=_FIX_URL)
    if len(raw) > MAX_URL_LEN:
        raise StoreError(
            f"The run store URL is {len(raw)} characters long (at most {MAX_URL_LEN}).",
            fix=_FIX_URL,
        )
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError) as exc:
        raise StoreError(
            f"The run store URL {mask_url(raw)!r} is malformed ({exc}).", fix=_FIX_URL
        ) from None
    backend, _, driver = url.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return _sqlite(url)
    if backend == "postgresql" and driver in ("", "psycopg"):
        url = url.set(drivername="postgresql+psycopg")
        if not url.host and "host" not in url.query:
            raise StoreError(
                f"The run store URL {mask_url(url)!r} names no PostgreSQL host.", fix=_FIX_URL
            )
        if not url.database:
            raise StoreError(
                f"The run store URL {mask_url(url)!r} names no database.",
                fix="Add the database name after the host: postgresql+psycopg://USER:"
                "PASSWORD@HOST:5432/DATABASE (create it with `createdb DATABASE`).",
            )
        return StoreURL(url=url, backend="postgresql")
    raise StoreError(
        f"The run store URL {mask_url(url)!r} uses an unsupported scheme "
        f"{url.drivername!r}; supported: sqlite, postgresql+psycopg.",
        fix=_FIX_URL,
    )


def _sqlite(url: URL) -> StoreURL:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise StoreError(
            f"The run store URL {mask_url(url)!r} is an in-memory SQLite database; the "
            "runner, agents and CLI are separate processes and would each see their own.",
            fix=_FIX_URL,
        )
    path = Path(database).expanduser()
    if not path.is_absolute():
        raise StoreError(
            f"The run store URL {mask_url(url)!r} has a relative path {database!r}; Ray "
            "workers run in other directories and would open other files.",
            fix="Use an absolute path: sqlite:////ABSOLUTE/PATH/runs.db (four slashes).",
        )
    return StoreURL(url=url.set(database=str(path)), backend="sqlite", sqlite_path=path)
