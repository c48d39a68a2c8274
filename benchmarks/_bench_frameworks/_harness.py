"""Measurement harness shared by every side of ``benchmarks/agent_overhead.py``.

Pure standard library: it is imported both by the main venv (lumos_ray, bare Ray
actor) and by ``.venv-bench`` (LangGraph, CrewAI), so every framework is timed by
the very same code.

One *step* (the unit everything is compared on) = one agent turn that makes
exactly one model call that requests the tool ``add(a=1, b=2)``, one tool call, and
one final model call that answers ``"3"``. Every turn runs on a fresh thread /
conversation id; the harness checks each answer, so a framework that skips the
tool (or answers wrongly) fails the run instead of looking fast.

Concurrency N = N workers in one asyncio event loop, each running turns back to
back (a closed loop). Per rep we record every turn's latency and the rep's wall
time; the summary is the median over reps of each statistic.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "EXPECTED",
    "TOOL_ARGS",
    "calibrate",
    "measure",
    "one_rep",
    "overhead_of",
    "own_time_us",
    "scripted_decision",
    "serve",
    "summarize",
]

TOOL_ARGS = {"a": 1, "b": 2}
EXPECTED = "3"

Turn = Callable[[str], Awaitable[Any]]


def scripted_decision(last_role: str, last_content: Any) -> tuple[str, Any]:
    """The fake model's whole brain, identical for every framework.

    After a user message: call ``add(a=1, b=2)``; after the tool result: answer with
    it. Stateless (decided from the conversation), so concurrent runs cannot
    interfere the way a shared reply iterator would.
    """
    if last_role == "tool":
        return ("answer", str(last_content).strip())
    return ("call", TOOL_ARGS)


def add(a: int, b: int) -> int:
    """The tool's own work."""
    return a + b


def own_time_us(n: int = 20_000) -> float:
    """Time of the model's and the tool's own work in one step (2 decisions + 1
    tool call), in microseconds: what is subtracted to get framework overhead."""
    t0 = time.perf_counter()
    for _ in range(n):
        scripted_decision("user", "hi")
        r = add(**TOOL_ARGS)
        scripted_decision("tool", r)
    return (time.perf_counter() - t0) / n * 1e6


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def _rep(turn: Turn, concurrency: int, per_worker: int) -> tuple[list[float], float]:
    lat: list[float] = []

    async def worker() -> None:
        for _ in range(per_worker):
            tid = uuid.uuid4().hex
            t0 = time.perf_counter()
            out = await turn(tid)
            lat.append(time.perf_counter() - t0)
            if str(out).strip() != EXPECTED:
                raise RuntimeError(f"wrong answer {out!r} (expected {EXPECTED!r})")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, time.perf_counter() - t0


async def calibrate(
    turn: Turn, concurrency: int, *, target_rep_s: float = 0.8, max_turns_per_rep: int = 2000
) -> int:
    """Warm up (imports, lazy init, caches, worker threads), then return how many
    turns per worker make a rep of about ``target_rep_s``.

    The warm-up rep is never used for sizing (first calls are unrepresentative),
    except that a framework whose warm-up rep alone exceeds the target at N>1 gets
    one turn per worker straight away (nothing smaller exists; saves a slow rep).
    """
    _, warm = await _rep(turn, concurrency, 1)
    if concurrency > 1 and warm > target_rep_s:
        return 1
    k = 3 if concurrency == 1 else 1
    _, wall = await _rep(turn, concurrency, k)
    per_turn = wall / (k * concurrency)
    return max(1, min(max_turns_per_rep // concurrency, int(target_rep_s / per_turn / concurrency)))


async def one_rep(turn: Turn, concurrency: int, per_worker: int) -> dict[str, float]:
    """One rep: ``concurrency`` workers x ``per_worker`` turns; statistics in us."""
    gc.collect()
    lat, wall = await _rep(turn, concurrency, per_worker)
    n = len(lat)
    return {
        "p50_us": _pct(lat, 0.5) * 1e6,
        "p95_us": _pct(lat, 0.95) * 1e6,
        "throughput": n / wall,
        "amortized_us": wall / n * 1e6,
        "turns": n,
    }


def overhead_of(row: dict[str, float], concurrency: int, own_us: float) -> float:
    """Framework overhead per step: p50 latency at N=1, wall/turns at N>1, minus own time."""
    return (row["p50_us"] if concurrency == 1 else row["amortized_us"]) - own_us


def summarize(rows: list[dict[str, float]], concurrency: int, own_us: float) -> dict[str, Any]:
    """Medians over reps (latencies in microseconds): ``p50_us``/``p95_us`` per-turn
    latency, ``throughput`` turns/s, ``amortized_us`` = wall / turns (what one step
    costs the machine while N are in flight), ``overhead_us`` (see overhead_of)."""
    out: dict[str, Any] = {
        k: statistics.median(r[k] for r in rows)
        for k in ("p50_us", "p95_us", "throughput", "amortized_us")
    }
    out.update(
        concurrency=concurrency,
        reps=len(rows),
        turns_per_rep=rows[0]["turns"] if rows else 0,
        own_us=own_us,
        overhead_us=statistics.median(overhead_of(r, concurrency, own_us) for r in rows),
        per_rep=rows,
    )
    return out


async def measure(
    turn: Turn,
    concurrency: int,
    *,
    reps: int = 5,
    target_rep_s: float = 0.8,
    own_us: float | None = None,
) -> dict[str, Any]:
    """Calibrate, then ``reps`` reps back to back (standalone use; the benchmark
    itself interleaves frameworks rep by rep, see ``serve``)."""
    own = own_time_us() if own_us is None else own_us
    per_worker = await calibrate(turn, concurrency, target_rep_s=target_rep_s)
    rows = [await one_rep(turn, concurrency, per_worker) for _ in range(reps)]
    return summarize(rows, concurrency, own)


async def serve(turn: Turn) -> None:
    """Line protocol on stdin/stdout so a driver in another venv can interleave reps
    of several frameworks (fair under a machine load that drifts):

    ``{"cmd": "calibrate", "concurrency": N, "target_rep_s": s}`` -> ``{"per_worker": k}``
    ``{"cmd": "rep", "concurrency": N, "per_worker": k}`` -> one_rep's row
    ``{"cmd": "quit"}``; errors come back as ``{"error": "..."}``.
    """
    import json
    import sys

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        req = json.loads(line)
        try:
            if req["cmd"] == "quit":
                return
            if req["cmd"] == "calibrate":
                k = await calibrate(
                    turn, req["concurrency"], target_rep_s=req.get("target_rep_s", 0.8)
                )
                resp: dict[str, Any] = {"per_worker": k}
            elif req["cmd"] == "rep":
                resp = await one_rep(turn, req["concurrency"], req["per_worker"])
            else:
                resp = {"error": f"unknown command {req['cmd']!r}"}
        except Exception as exc:
            resp = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write("@@" + json.dumps(resp) + "\n")
        sys.stdout.flush()
