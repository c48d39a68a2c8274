"""Per-call overhead of lumos_ray tools, side by side with calling the function directly.

Measures, for one trivial tool (add two ints):
  direct      - the plain Python function
  validate    - Tool.validate only (pydantic validation of the arguments)
  acall async - Tool.acall on an async tool (validate + await + JSON-ready result)
  acall sync  - Tool.acall on a sync tool (validate + hop to a worker thread)
  ray task    - Tool.acall on a tool with num_cpus=1 (a Ray task per call), 1 and 32 in flight

Run:  .venv/bin/python benchmarks/tool_overhead.py [--no-ray]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lumos_ray.tools._api import tool


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def add_async(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


async def _per_call_async_us(fn: Callable[[], Awaitable[Any]], n: int, conc: int = 1) -> float:
    t0 = time.perf_counter()
    if conc == 1:
        for _ in range(n):
            await fn()
    else:
        for _ in range(n // conc):
            await asyncio.gather(*(fn() for _ in range(conc)))
    return (time.perf_counter() - t0) / n * 1e6


def _best(samples: list[float]) -> float:
    """Best of several rounds: the least disturbed by other load on a shared machine."""
    return min(samples)


async def main(use_ray: bool) -> None:
    sync_tool = tool(add)
    async_tool = tool(add_async)
    args = {"a": 1, "b": 2}
    rows: list[tuple[str, float]] = []
    rows.append(("direct call", _best([_per_call_us(lambda: add(1, 2), 20000) for _ in range(5)])))
    rows.append(
        (
            "Tool.validate",
            _best([_per_call_us(lambda: sync_tool.validate(args), 5000) for _ in range(5)]),
        )
    )
    rows.append(
        (
            "acall async tool",
            _best(
                [await _per_call_async_us(lambda: async_tool.acall(args), 5000) for _ in range(5)]
            ),
        )
    )
    rows.append(
        (
            "acall sync tool (thread)",
            _best(
                [await _per_call_async_us(lambda: sync_tool.acall(args), 2000) for _ in range(5)]
            ),
        )
    )
    if use_ray:
        from lumos_ray import runtime

        runtime.connect(num_cpus=2)
        ray_tool = tool(add, num_cpus=1)
        await ray_tool.acall(args)  # warm a worker
        rows.append(
            (
                "acall Ray-task tool, 1 in flight",
                _best(
                    [await _per_call_async_us(lambda: ray_tool.acall(args), 100) for _ in range(3)]
                ),
            )
        )
        rows.append(
            (
                "acall Ray-task tool, 32 in flight",
                _best(
                    [
                        await _per_call_async_us(lambda: ray_tool.acall(args), 320, 32)
                        for _ in range(3)
                    ]
                ),
            )
        )
        runtime.shutdown()
    base = rows[0][1]
    print(f"{'path':<36} {'us/call':>10} {'overhead us':>12}")
    for name, us in rows:
        print(f"{name:<36} {us:>10.2f} {us - base:>12.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--no-ray", action="store_true", help="skip the Ray-task rows")
    asyncio.run(main(not p.parse_args().no_ray))
