"""The gate tool of the hosted-run integration tests (importable by workers)."""

from __future__ import annotations

import asyncio
import os

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
