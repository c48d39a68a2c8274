"""Functions the hosted-run integration tests send to agent actors (importable by
workers): a gate tool and a look at what an actor's hosted runner executed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from lumos_ray.tools import tool


@tool
async def wait_for_file(path: str) -> str:
    """Wait until the file at `path` exists.

    Args:
        path: The file to wait for.
    """
    for _ in range(6000):  # bounded: 10 minutes at most
        if os.path.exists(path):
            return "opened"
        await asyncio.sleep(0.1)
    raise TimeoutError(path)


async def hosted_runs(actor: Any) -> dict[str, list[str]]:
    """Ids of the runs the actor's hosted runner executes ("running") and executed
    ("ended"), sent to the actor with ``AgentActor.hosted``."""
    runner = actor.hosted_state.get("runner")
    if runner is None:
        return {"running": [], "ended": []}
    return {"running": list(runner.tasks), "ended": list(runner._ended)}
