"""Agent density: shared hosting (many agents per host actor) vs dedicated actors.

Side by side in one run on an embedded cluster (issue 17's targets: >= 2,000 distinct
idle agents on one 24 GB machine with shared hosting, a new agent's first turn <= 50 ms
in a warm pool, a dedicated agent actor ready in <= 1.5 s):

* ``shared``: N distinct agents (``hosting="shared"``, a function model that answers
  at once) each answer one turn, 100 in flight, filled in stages (250, 500, 1000, ...,
  N); at each stage the host processes' memory (USS, psutil) added per agent (after
  the hosts started), and the first turn of *new* agents one after another (deploy +
  first answer, the pool already warm; M in all, split over the stages): p50/p95 --
  the memory and cold-start curves as the hosts fill.
* ``dedicated``: K distinct agents (the default: one actor each), the same turn; the
  time each took from deploy until its actor answers, and to its first answer (p50),
  next to a bare Ray actor's start on the same cluster (the floor, measured
  interleaved with the first five agents), and the USS per actor; the rest start in
  growing batches (1, 2, 4, ... together): the cold-start curve under contention.

    .venv/bin/python benchmarks/agent_density.py --shared 2000 --dedicated 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def answer(messages: list[dict], tools: list[dict]) -> str:
    """Answers at once: what is measured is hosting, not a model."""
    return "ok"


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _uss_of_actors(prefix: str) -> tuple[int, float]:
    """(processes, total USS MiB) of Ray worker processes running actors of ``prefix``."""
    import psutil

    n, total = 0, 0.0
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "ray::" in cmd and prefix in cmd:
                total += p.memory_full_info().uss / 2**20
                n += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return n, total


async def _bounded(coros: list[Any], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


def _stages(n: int) -> list[int]:
    """Where the curve is sampled: 250, 500, 1000, ... doubling, then ``n``."""
    stages, k = [], 250
    while k < n:
        stages.append(k)
        k *= 2
    return [*stages, n]


async def shared(n: int, m: int) -> dict[str, Any]:
    """Fill the hosts to ``n`` agents in stages; at each stage, the hosts' memory and
    the first turn of new agents (the cold-start curve as the hosts fill)."""
    from lumos_ray import Agent
    from lumos_ray.testing import FunctionModel

    model = FunctionModel(answer)

    async def first_turn(i: int, tag: str) -> float:
        t0 = time.perf_counter()
        h = Agent(name=f"{tag}-{i}", model=model, hosting="shared").deploy()
        r = await h.run("hi", thread_id="t")
        assert r.output == "ok"
        return time.perf_counter() - t0

    # Start every host actor (a few agents land on each), then measure from there.
    await asyncio.gather(*(first_turn(i, "warmup") for i in range(8)))
    _, base_uss = _uss_of_actors("AgentHost")
    curve: list[dict[str, Any]] = []
    filled, fill_s, new = 0, 0.0, []
    per_stage = max(1, m // len(_stages(n)))
    for stage in _stages(n):
        t0 = time.perf_counter()
        await _bounded([first_turn(i, "sh") for i in range(filled, stage)], 100)
        fill_s += time.perf_counter() - t0
        filled = stage
        procs, uss = _uss_of_actors("AgentHost")
        # New agents one after another on hosts that already hold `stage` agents.
        stage_new = [await first_turn(i, f"new{stage}") for i in range(per_stage)]
        new += stage_new
        curve.append(
            {
                "hosted": stage,
                "host_uss_mib": round(uss, 1),
                "kib_per_agent": round((uss - base_uss) * 1024 / stage, 1),
                "first_turn_p50_ms": round(statistics.median(stage_new) * 1000, 1),
                "first_turn_p95_ms": round(_pct(stage_new, 0.95) * 1000, 1),
            }
        )
        print(f"[shared] {curve[-1]}", flush=True)
    return {
        "agents": n,
        "fill_s": round(fill_s, 2),
        "agents_per_s": round(n / fill_s, 1),
        "host_processes": procs,
        "host_uss_mib": round(uss, 1),
        "host_uss_before_mib": round(base_uss, 1),
        "kib_per_agent": curve[-1]["kib_per_agent"],
        "first_turn_warm_p50_ms": round(statistics.median(new) * 1000, 1),
        "first_turn_warm_p95_ms": round(_pct(new, 0.95) * 1000, 1),
        "curve": curve,
    }


class Echo:
    """The floor: an actor that does nothing (Ray's own actor start on this cluster)."""

    async def ping(self) -> int:
        return 1


async def plain_actor_start(i: int) -> float:
    """Seconds from creating a bare named actor to its first answer."""
    from lumos_ray.runtime import await_ref, get_or_create_actor, remote_class

    t0 = time.perf_counter()
    a = get_or_create_actor(f"echo-{i}-{time.time_ns()}", remote_class(Echo))
    await await_ref(a.ping.remote())
    return time.perf_counter() - t0


async def dedicated(k: int) -> dict[str, Any]:
    from lumos_ray import Agent
    from lumos_ray.testing import FunctionModel

    model = FunctionModel(answer)

    actor_ready: list[float] = []

    async def first_turn(i: int) -> float:
        t0 = time.perf_counter()
        h = Agent(name=f"ded-{i}", model=model).deploy()
        await h.ensure_current()  # the actor is up and answers (its __init__ ran)
        actor_ready.append(time.perf_counter() - t0)
        r = await h.run("hi", thread_id="t")
        assert r.output == "ok"
        return time.perf_counter() - t0

    # The floor and the agents interleaved, one at a time: both see the same machine.
    floor_runs: list[float] = []
    one_by_one: list[float] = []
    for i in range(min(k, 5)):
        floor_runs.append(await plain_actor_start(i))
        one_by_one.append(await first_turn(i))
    floor = statistics.median(floor_runs)
    ready_alone = list(actor_ready)
    # The cold-start curve: the rest started in growing batches (1, 2, 4, ...), each
    # batch together; the p50 of each batch's first answers.
    batches: list[dict[str, Any]] = []
    together: list[float] = []
    t0 = time.perf_counter()
    start, size = 5, 1
    while start < k:
        batch = list(range(start, min(k, start + size)))
        took = await asyncio.gather(*(first_turn(i) for i in batch))
        together += took
        batches.append(
            {
                "started_together": len(batch),
                "first_answer_p50_s": round(statistics.median(took), 2),
                "first_answer_max_s": round(max(took), 2),
            }
        )
        print(f"[dedicated] {batches[-1]}", flush=True)
        start += len(batch)
        size *= 2
    fill_s = time.perf_counter() - t0
    procs, uss = _uss_of_actors("AgentActor")
    return {
        "agents": k,
        "plain_ray_actor_p50_s": round(floor, 2),
        "actor_ready_alone_p50_s": round(statistics.median(ready_alone), 2),
        "ready_alone_p50_s": round(statistics.median(one_by_one), 2),
        "ready_alone_max_s": round(max(one_by_one), 2),
        "ready_together_p50_s": round(statistics.median(together), 2) if together else None,
        "fill_together_s": round(fill_s, 2),
        "actor_processes": procs,
        "uss_mib_per_actor": round(uss / max(procs, 1), 1),
        "batches": batches,
    }


async def main(args: argparse.Namespace) -> None:
    from lumos_ray import runtime

    os.environ.setdefault("LUMOS_HOME", "/tmp/lumos-density")
    runtime.connect(None)
    print(f"load at start: {os.getloadavg()}", flush=True)
    sh = await shared(args.shared, args.new)
    print("shared:", sh, flush=True)
    de = await dedicated(args.dedicated)
    print("dedicated:", de, flush=True)
    print(f"load at end: {os.getloadavg()}")
    ratio = de["uss_mib_per_actor"] * 1024 / max(sh["kib_per_agent"], 0.1)
    print(
        "\n| hosting | agents | first turn of a new agent | memory per agent |\n"
        "|---|---:|---:|---:|\n"
        f"| shared | {sh['agents']} | p50 {sh['first_turn_warm_p50_ms']} ms, "
        f"p95 {sh['first_turn_warm_p95_ms']} ms (warm pool) | {sh['kib_per_agent']} KiB "
        f"(hosts: {sh['host_processes']} processes, {sh['host_uss_mib']} MiB) |\n"
        f"| dedicated | {de['agents']} | actor up p50 {de['actor_ready_alone_p50_s']} s "
        f"(a bare Ray actor: {de['plain_ray_actor_p50_s']} s), "
        f"first answer alone p50 {de['ready_alone_p50_s']} s "
        f"(max {de['ready_alone_max_s']} s); together p50 {de['ready_together_p50_s']} s "
        f"| {de['uss_mib_per_actor']} MiB |\n\nmemory per agent: dedicated / shared = {ratio:.0f}x"
    )
    print("\nShared hosting as the hosts fill (new agents' first turn, one at a time):\n")
    print("| agents hosted | host USS (MiB) | KiB per agent | first turn p50 (ms) | p95 (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for c in sh["curve"]:
        print(
            f"| {c['hosted']} | {c['host_uss_mib']} | {c['kib_per_agent']} | "
            f"{c['first_turn_p50_ms']} | {c['first_turn_p95_ms']} |"
        )
    print("\nDedicated agents started together (cold start, each its own actor process):\n")
    print("| started together | first answer p50 (s) | max (s) |")
    print("|---:|---:|---:|")
    for b in de["batches"]:
        print(
            f"| {b['started_together']} | {b['first_answer_p50_s']} | {b['first_answer_max_s']} |"
        )
    if args.json_out:
        import json

        Path(args.json_out).write_text(json.dumps({"shared": sh, "dedicated": de}, indent=1))
    runtime.shutdown()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=int, default=2000, help="distinct shared agents")
    p.add_argument("--new", type=int, default=50, help="new agents timed one by one (warm)")
    p.add_argument("--dedicated", type=int, default=20, help="distinct dedicated agents")
    p.add_argument("--json-out", default=None, help="also write the raw results here")
    asyncio.run(main(p.parse_args()))
