"""A real PostgreSQL server for tests: ``initdb`` in a temp dir, a free loopback port,
stopped by PID at the end.

Used by the store suite (``tests/unit/test_store_*.py``) and, with
``--store-backend postgresql``, by the integration tier's cluster. The server binaries
come from Debian's ``postgresql`` package (``make install`` installs it when missing).
When they are missing the fixture FAILS, saying so, rather than skipping: a suite that
silently tested one backend would claim two. Set ``LUMOS_TEST_NO_POSTGRES=1`` to skip
the PostgreSQL cases on purpose (for instance on a machine where you cannot install
packages); the skip reason names the variable.

``initdb`` refuses to run as root, so as root the server runs as an unprivileged
user: ``postgres`` when it exists (the Debian package creates it), else a system user
``lumos-pg`` created with ``useradd``. Its data directory is a fresh temp dir that user
owns. The server listens only on 127.0.0.1 with password (SCRAM) authentication, so
tests also cover a URL with a password. ``fsync`` is off: the data is thrown away.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "OPT_OUT_ENV",
    "PostgresServer",
    "find_pg_bin",
    "make_store",
    "postgres_server",
    "running_postgres",
    "start_postgres",
    "store_backends",
    "store_url",
]

#: Set to 1 to skip PostgreSQL-backed tests instead of failing when binaries are missing.
OPT_OUT_ENV = "LUMOS_TEST_NO_POSTGRES"
_USER = "lumos"
_START_TIMEOUT_S = 60
_STOP_TIMEOUT_S = 30


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then Debian's
    versioned ``/usr/lib/postgresql/<N>/bin`` (newest version)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit() else 0,
    )
    for d in reversed(dirs):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> str | None:
    """None when we are not root (run the server as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "lumos-pg"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "lumos-pg"],
        check=True,
        capture_output=True,
    )
    return "lumos-pg"


@dataclass
class PostgresServer:
    """A running throwaway server; ``url(db)`` is a psycopg URL for one database."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    user: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=_USER,
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")

    def pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """``pg_ctl stop -m fast``, then make sure the postmaster PID is gone (SIGKILL
        by PID if it is not), then remove the temp dir."""
        pid = self.pid()
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                      "-t", str(_STOP_TIMEOUT_S), timeout=_STOP_TIMEOUT_S + 10)  # fmt: skip
        if pid is not None:
            deadline = time.monotonic() + _STOP_TIMEOUT_S
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while _alive(pid) and time.monotonic() < deadline + 10:
                    time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True  # (pg_ctl daemonises the postmaster: it is never our zombie child)


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start on a free 127.0.0.1 port. Raises RuntimeError with the
    server's log when it does not come up; FileNotFoundError when binaries are missing."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries (initdb, pg_ctl) are not on PATH or under "
            "/usr/lib/postgresql/*/bin. Run `make install` (it installs Debian's "
            f"`postgresql` package), or set {OPT_OUT_ENV}=1 to skip the PostgreSQL "
            "store tests on purpose."
        )
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="lumos-pg-"))
    password = secrets.token_urlsafe(16)
    (root / "pwfile").write_text(password + "\n")
    (root / "sock").mkdir()
    if user:
        info = pwd.getpwnam(user)
        for p in (root, root / "pwfile", root / "sock"):
            os.chown(p, info.pw_uid, info.pw_gid)
    os.chmod(root, 0o700)
    server = PostgresServer(bin_dir=bin_dir, root=root, port=0, password=password, user=user)
    init = server._run(
        "initdb", "-D", str(server.data_dir), "-U", _USER, "--auth=scram-sha-256",
        f"--pwfile={root / 'pwfile'}", "-E", "UTF8", "--locale=C", "--no-sync",
        timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    last = ""
    for _ in range(3):  # the free port may be taken between probing and binding
        server.port = _free_port()
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root / 'sock'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        log = root / "server.log"
        started = server._run(
            "pg_ctl", "start", "-D", str(server.data_dir), "-l", str(log), "-w",
            "-t", str(_START_TIMEOUT_S), "-o", opts, timeout=_START_TIMEOUT_S + 10,
        )  # fmt: skip
        if started.returncode == 0:
            return server
        last = started.stdout + started.stderr
        with contextlib.suppress(OSError):
            last += "\n" + log.read_text()[-4000:]
        pid = server.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start:\n{last}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


# -- pytest fixtures (exposed by tests/unit/conftest.py and tests/integration/conftest.py)


def store_backends(config: pytest.Config) -> list[str]:
    """The backends ``--store-backend`` selects for the store suite."""
    choice = config.getoption("--store-backend")
    return ["sqlite", "postgresql"] if choice == "both" else [choice]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway server per test session (each test gets its own database)."""
    if os.environ.get(OPT_OUT_ENV, "") not in ("", "0"):
        pytest.skip(f"{OPT_OUT_ENV} is set: PostgreSQL-backed tests skipped on purpose")
    try:
        server = start_postgres()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_url(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL of an empty store on ``store_backend`` (a new file / a new database)."""
    if store_backend == "sqlite":
        return f"sqlite:///{tmp_path}/runs.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{secrets.token_hex(6)}")


@pytest.fixture
def make_store(store_url: str) -> Iterator[Any]:
    """``make_store(tenant_id="default")`` -> an open RunStore on ``store_url``; all
    closed at the end of the test (PostgreSQL connections are not left behind)."""
    from lumos_ray.store import RunStore

    opened: list[RunStore] = []

    def make(tenant_id: str = "default", url: str | None = None) -> RunStore:
        store = RunStore(url or store_url, tenant_id)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
