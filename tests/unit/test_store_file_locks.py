"""Opening a second store on the same SQLite file must not drop the first one's locks.

Closing any descriptor of a file drops every POSIX lock the process holds on it, and
SQLite locks with those: a store that opened and closed the database file to set its
mode, while another connection of the same process held a write lock, let a second
process write at the same time and corrupted the database (seen in CI with many agents
per host process). Here: one connection holds a write transaction, the store is opened
again in the same process, and another process must still be refused the write lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from lumos_ray.store import open_store
from lumos_ray.store._database import Database

TRY_WRITE = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)
try:
    c.execute("BEGIN IMMEDIATE")
except sqlite3.OperationalError as exc:
    print("refused:", exc)
else:
    print("got the write lock")
"""


def test_opening_the_store_again_keeps_another_connections_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    open_store(url=f"sqlite:///{db}", tenant_id="t")  # creates the file and schema
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # this process now holds the write lock
    try:
        Database(f"sqlite:///{db}")  # a second engine on the file (as a Platform makes)
        out = subprocess.run(
            [sys.executable, "-c", TRY_WRITE, str(db)], capture_output=True, text=True, timeout=60
        )
        assert out.stdout.startswith("refused: database is locked"), out.stdout + out.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
