"""The control-plane store: runs, step checkpoints, events, agent threads and memory.

SQLAlchemy over a database URL (SQLite embedded by default, PostgreSQL for clusters).
It stores data only: never pickled code, never secrets.
"""

from __future__ import annotations

from lumos_ray.store._sql import TERMINAL_STATES, RunStore, open_store

__all__ = ["TERMINAL_STATES", "RunStore", "open_store"]
