"""Compatibility module: the store used to be this one file.

Callers (the runner, the agent actor, the runs API, tests) import ``RunStore``,
``open_store`` and ``TERMINAL_STATES`` from ``lumos_ray.store._sql``; they now live in
``_store``. New code should import from ``lumos_ray.store``.
"""

from __future__ import annotations

from lumos_ray.store._store import TERMINAL_STATES, CheckpointWrite, RunStore, open_store

__all__ = ["TERMINAL_STATES", "CheckpointWrite", "RunStore", "open_store"]
