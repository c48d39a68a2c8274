"""Function steps for the two-node tests: each execution is logged to an effect file
(one JSON line when it starts, one when it finishes) with the node it ran on, so a
test can count executions per step across a node's death."""

from __future__ import annotations

import json
import os
import time
from typing import Any

__all__ = ["effect"]


def _log(path: str, **entry: Any) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def effect(log: str, step: str, sleep_s: float = 0.0) -> dict[str, Any]:
    """Record a start, wait ``sleep_s``, record the finish; returns where it ran."""
    node = os.environ.get("LUMOS_RAY_NODE", "?")
    _log(log, event="start", step=step, pid=os.getpid(), node=node)
    time.sleep(sleep_s)
    _log(log, event="done", step=step, pid=os.getpid(), node=node)
    return {"step": step, "node": node}
