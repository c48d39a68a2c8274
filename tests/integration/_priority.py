"""Start Ray nodes at a raised CPU priority on a machine shared with other loads.

Ray's raylet waits a fixed 15 s (not configurable in Ray 2.60) for its dashboard agent
to write its port file and aborts the node otherwise; on these 2-core machines shared
by several test sessions (load average 20+), the agent's Python start-up often takes
longer. While a node starts, its processes get a higher priority (niceness -10, only
possible as root; elsewhere nothing changes); afterwards every process of the node is
put back to the normal priority, so the tests then compete like any other process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psutil

from lumos_ray.runtime._nodes import node_processes

__all__ = ["BOOST", "boosted", "restore_priority"]

BOOST = -10


def _can_boost() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def restore_priority(temp_dir: str) -> None:
    """Every process of the node back to niceness 0."""
    for p in node_processes(temp_dir):
        with contextlib.suppress(psutil.Error):
            if p.nice() < 0:
                p.nice(0)


@contextlib.contextmanager
def boosted() -> Iterator[None]:
    """Processes spawned inside (``ray start`` and what it starts) inherit the raised
    priority; this process gets its own back at the end."""
    if not _can_boost():
        yield
        return
    before = os.nice(0)
    os.nice(BOOST)
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)
