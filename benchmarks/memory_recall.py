"""Semantic memory: recall latency (p50/p95) and what recall adds to an agent turn.

    .venv/bin/python benchmarks/memory_recall.py --facts 300 --queries 100 \\
        --json-out /tmp/memory_recall.json

On one embedded Ray cluster (state in a temp dir):

1. An agent with ``MemoryConfig(semantic=True)`` (a scripted model that answers at
   once) is told ``--facts`` facts, one turn each, spread over 20 threads; the
   background writer's time to get them all into the pool is measured (``flush``).
2. Recall as the agent does it: ``--queries`` distinct questions (the router caches
   query vectors, so no query repeats) through the memory backend the agent actor
   uses (the RAG pool's router: MiniLM query embedding + vector search), from the
   driver: p50/p95.
3. The floor for the same work: the same MiniLM model and an exact inner-product
   search over the same facts in this process (no actor hop, no RAG router).
4. A whole turn on a fresh thread, with recall (``recall='auto'``) vs the same agent
   without semantic memory, rounds interleaved: p50/p95 each and the ratio.

Every number is measured on this shared machine; ``uptime`` is recorded with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMES = ["Ada", "Bram", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ivo", "Jun"]
THINGS = ["colour", "city", "dish", "sport", "book", "band", "car", "tree", "river", "game"]
VALUES = ["teal", "Lisbon", "ramen", "curling", "Dune", "Blur", "Volvo", "birch", "Douro", "go"]


def fact(i: int) -> str:
    n, t, v = NAMES[i % 10], THINGS[(i // 10) % 10], VALUES[(i * 7 + i // 10) % 10]
    return f"Customer {n}-{i} says their favourite {t} is {v} (ticket {i})."


def question(i: int) -> str:
    n, t = NAMES[i % 10], THINGS[(i // 10) % 10]
    return f"What is the favourite {t} of customer {n}-{i}? (q{i})"


def noted(messages: list[dict[str, Any]], tools: Any) -> Any:
    from lumos_ray.testing import reply

    return reply("noted")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs)) - 1))]


def _summary(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50_ms": round(statistics.median(xs) * 1e3, 2),
        "p95_ms": round(_pct(xs, 95) * 1e3, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from lumos_ray import Agent
    from lumos_ray.actors._memory import collection_name
    from lumos_ray.rag._agent_memory import open_memory
    from lumos_ray.testing import FunctionModel

    mem = {"semantic": True, "recall_k": 3, "recall_timeout_s": 30.0}
    with_mem = Agent(name="bench-mem", model=FunctionModel(noted), memory=mem).deploy()
    without = Agent(name="bench-plain", model=FunctionModel(noted)).deploy()
    out: dict[str, Any] = {"facts": args.facts, "queries": args.queries}

    t0 = time.perf_counter()
    sem = asyncio.Semaphore(8)

    async def tell(i: int) -> None:
        async with sem:
            await with_mem.run(fact(i), thread_id=f"facts-{i % 20}")

    await asyncio.gather(*(tell(i) for i in range(args.facts)))
    told = time.perf_counter() - t0
    (counts,) = await with_mem.flush_memory()
    flushed = time.perf_counter() - t0
    out["write"] = {
        "turns_s": round(told, 2),
        "turns_plus_flush_s": round(flushed, 2),
        "counts": counts,
    }
    print(f"[bench] write {out['write']}", file=sys.stderr, flush=True)

    # 2. recall through the backend the actor uses (the router of the memory collection).
    backend = await asyncio.to_thread(open_memory, "default", collection_name("bench-mem", "agent"))
    await backend.search("warm up", 3)
    lat: list[float] = []
    hits_ok = 0
    for q in range(args.queries):
        i = (q * 37) % args.facts
        t = time.perf_counter()
        hits = await backend.search(question(i), 3)
        lat.append(time.perf_counter() - t)
        hits_ok += any(f"ticket {i})" in h["text"] for h in hits)
    out["recall_pool"] = {**_summary(lat), "hit_at_3": round(hits_ok / args.queries, 3)}
    print(f"[bench] recall via pool {out['recall_pool']}", file=sys.stderr, flush=True)

    # 3. the floor: the same model and an exact search in this process.
    from lumos_ray.rag._embed import MiniLMEmbedder

    emb = MiniLMEmbedder(threads=1)
    docs = emb.embed([f"user: {fact(i)}\nassistant: noted" for i in range(args.facts)])
    emb.embed(["warm up"])
    floor: list[float] = []
    for q in range(args.queries):
        i = (q * 37) % args.facts
        t = time.perf_counter()
        v = emb.embed([question(i) + " "])[0]  # a new string: no cache anywhere
        (docs @ v).argsort()[-3:]
        floor.append(time.perf_counter() - t)
    out["recall_floor_in_process"] = _summary(floor)
    print(f"[bench] floor {out['recall_floor_in_process']}", file=sys.stderr, flush=True)

    # 4. a turn with recall vs without, interleaved.
    on: list[float] = []
    off: list[float] = []
    for q in range(args.queries):
        i = (q * 53 + 11) % args.facts
        for h, sink in ((with_mem, on), (without, off)):
            t = time.perf_counter()
            await h.run(question(i) + " [turn]", thread_id=f"ask-{q}-{id(sink)}")
            sink.append(time.perf_counter() - t)
    out["turn_with_recall"] = _summary(on)
    out["turn_without_memory"] = _summary(off)
    out["turn_ratio_p50"] = round(statistics.median(on) / statistics.median(off), 2)
    out["recall_pool_vs_floor_p50"] = round(statistics.median(lat) / statistics.median(floor), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--facts", type=int, default=300)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="lumos-bench-mem-")
    os.environ["LUMOS_HOME"] = home
    os.environ.pop("LUMOS_STORE_URL", None)
    from lumos_ray import runtime

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    for attempt in (1, 2, 3):  # a loaded machine's raylet can miss its start window
        try:
            runtime.connect(num_cpus=4)
            break
        except Exception as exc:
            runtime.shutdown()
            if attempt == 3:
                raise
            print(f"[bench] Ray start failed ({exc}); retrying", file=sys.stderr, flush=True)
            time.sleep(5)
    try:
        report = asyncio.run(run(args))
    finally:
        runtime.shutdown()
    report["uptime_before"] = load
    report["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
