"""The gate tool of the hosted-run integration tests (importable by workers)."""

from __future__ import annotations

import asyncio
import os

from lumos_ray.tools import tool


@tool
async def wait_for_file(path: str) -> str:
    """Wait until the file at `path` exists.

    Leaves ``<path>.waiter-<pid>`` behind first, so a test can tell which process is
    waiting (a resumed turn waits in a new one).

    Args:
        path: The file to wait for.
    """
    with open(f"{path}.waiter-{os.getpid()}", "w"):
        pass
    for _ in range(6000):  # bounded: 10 minutes at most
        if os.path.exists(path):
            return "opened"
        await asyncio.sleep(0.1)
    raise TimeoutError(path)


def waiters(path: str) -> set[str]:
    """The pids (as text) of the processes that have waited on `path`."""
    folder, name = os.path.split(path)
    prefix = f"{name}.waiter-"
    return {f[len(prefix) :] for f in os.listdir(folder) if f.startswith(prefix)}
