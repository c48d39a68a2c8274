"""Scale study: how the cost of work grows with the amount of work (issue 13).

Two series are measured by this script, on an embedded cluster (or ``--address``):

* ``sessions``: idle agent sessions on one agent actor. Every session is a thread that
  had one turn (a no-tool agent whose test model echoes the input; history persisted
  in the run store, the default) and then sits idle in the actor's cache. The actor
  process's RSS is read (psutil, same machine) at each level, sessions being added
  cumulatively, 100 in flight; memory per session = growth / sessions added.
* ``runs``: concurrent durable workflow runs. A one-step workflow (the built-in
  ``calculator`` tool: ``40 + 2``) run with ``lumos_ray.execute_run`` by C asyncio
  workers in a closed loop for ``--seconds`` after one untimed round of C runs (which
  starts the Ray worker processes C concurrent tool tasks need); runs/s and p50/p95
  latency per level.
  Each run is created, checkpointed and finished in the run store (SQLite embedded).

The other two series of the issue have their own, heavier benchmarks: gateway clients
(``serve_gateway_overhead.py --levels ...``, a Serve app per run) and RAG chunks 10k ->
1M (``rag_scale.py`` / ``rag_latency.py``); their numbers are in RESULTS.md.

Results are appended to a JSON file (``--out``, default
``benchmarks/data/scale_study.json``); ``plot`` draws PNGs next to RESULTS.md when
matplotlib is installed (it is not in the project's lock: ``pip install matplotlib``
in a separate environment, or read the tables)::

    .venv/bin/python benchmarks/scale_study.py sessions --levels 100,1000,10000
    .venv/bin/python benchmarks/scale_study.py runs --levels 1,4,16,64,256 --seconds 10
    .venv/bin/python benchmarks/scale_study.py table      # markdown tables of the JSON
    python benchmarks/scale_study.py plot                 # PNGs (needs matplotlib)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "data" / "scale_study.json"


def _levels(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def _machine() -> dict[str, Any]:
    return {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
    }


async def sessions(levels: list[int]) -> dict[str, Any]:
    import psutil

    import lumos_ray as lr
    from lumos_ray.runtime import kill_actor
    from lumos_ray.testing import TestModel

    # A fresh actor per run: one left from an earlier run would start with its sessions.
    handle = lr.Agent(name=f"scale-sessions-{os.getpid()}", model=TestModel()).deploy()
    first = await handle.run("warm up", thread_id="warm")
    assert first.output, first
    actor = handle.actor("warm")
    pid = (await actor.info.remote())["pid"]
    proc = psutil.Process(pid)
    base = proc.memory_info().rss
    points: list[dict[str, Any]] = []
    done = 0
    for level in levels:
        t0 = time.perf_counter()
        todo = list(range(done, level))

        async def worker(ids: list[int]) -> None:
            for j in ids:
                out = await handle.run(f"session {j}", thread_id=f"s-{j}")
                if not out.output:
                    raise RuntimeError(f"session {j}: empty answer")

        await asyncio.gather(*(worker(todo[i::100]) for i in range(100)))
        done = level
        await asyncio.sleep(1.0)
        rss = proc.memory_info().rss
        info = await actor.info.remote()
        point = {
            "sessions": level,
            "threads_cached": info["threads_cached"],
            "rss_mib": round(rss / 2**20, 1),
            "kib_per_session": round((rss - base) / level / 1024, 2),
            "fill_s": round(time.perf_counter() - t0, 1),
            "load_1m": round(os.getloadavg()[0], 1),
        }
        points.append(point)
        print(f"[scale] sessions {point}", file=sys.stderr, flush=True)
    kill_actor(actor)
    return {"series": "sessions", "base_rss_mib": round(base / 2**20, 1), "points": points}


async def runs(levels: list[int], seconds: float) -> dict[str, Any]:
    import lumos_ray as lr

    wf = lr.Workflow(
        name="scale-runs",
        steps=[lr.ToolStep(id="total", tool="calculator", args={"expression": "40 + 2"})],
    )
    first = await lr.execute_run(wf, {})
    assert first.status == "succeeded", first
    points: list[dict[str, Any]] = []
    for conc in levels:
        lat: list[float] = []
        failed = [0]
        deadline = time.perf_counter() + seconds

        async def worker(lat: list[float], failed: list[int], deadline: float) -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                info = await lr.execute_run(wf, {})
                if info.status != "succeeded":
                    failed[0] += 1
                lat.append(time.perf_counter() - t)

        # Warm-up, untimed: each tool step is a Ray task, and C steps at once need C
        # worker processes; Ray starts missing ones on demand (seconds each on a busy
        # machine), which would otherwise be most of a short level's time.
        await asyncio.gather(*(lr.execute_run(wf, {}) for _ in range(conc)))
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(lat, failed, deadline) for _ in range(conc)))
        wall = time.perf_counter() - t0
        q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [lat[0]] * 99
        point = {
            "concurrency": conc,
            "runs": len(lat),
            "failed": failed[0],
            "runs_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(statistics.median(lat) * 1000, 1),
            "p95_ms": round(q[94] * 1000, 1),
            "load_1m": round(os.getloadavg()[0], 1),
        }
        points.append(point)
        print(f"[scale] runs {point}", file=sys.stderr, flush=True)
    return {"series": "runs", "seconds_per_level": seconds, "points": points}


def _append(out: Path, result: dict[str, Any]) -> None:
    data = json.loads(out.read_text()) if out.exists() else []
    data.append(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")


def table(data: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for r in data:
        m = r["machine"]
        lines.append(f"`{r['command']}` ({m['when']}, {m['cpus']} CPUs, load {m['load_1m']})")
        lines.append("")
        pts = r["points"]
        if r["series"] == "sessions":
            lines.append(
                "| sessions | actor RSS (MiB) | KiB/session (all) | KiB/session (marginal) "
                "| fill (s) | load |"
            )
            lines.append("|---|---|---|---|---|---|")
            prev = None
            for p in pts:
                # Growth since the previous level over the sessions added since then.
                marginal = "-"
                if prev:
                    grew_kib = (p["rss_mib"] - prev["rss_mib"]) * 1024
                    marginal = f"{grew_kib / (p['sessions'] - prev['sessions']):.2f}"
                lines.append(
                    f"| {p['sessions']:,} | {p['rss_mib']} | {p['kib_per_session']} | {marginal} "
                    f"| {p['fill_s']} | {p['load_1m']} |"
                )
                prev = p
        else:
            lines.append(
                "| concurrent runs | runs | runs/s | p50 (ms) | p95 (ms) | failed | load |"
            )
            lines.append("|---|---|---|---|---|---|---|")
            lines += [
                f"| {p['concurrency']} | {p['runs']} | {p['runs_per_s']} | {p['p50_ms']} "
                f"| {p['p95_ms']} | {p['failed']} | {p['load_1m']} |"
                for p in pts
            ]
        lines.append("")
    return "\n".join(lines)


def plot(data: list[dict[str, Any]], folder: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("matplotlib is not installed here: `pip install matplotlib` and run again")
    written = []
    latest = {r["series"]: r for r in data}
    if "sessions" in latest:
        pts = latest["sessions"]["points"]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([p["sessions"] for p in pts], [p["rss_mib"] for p in pts], marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("idle agent sessions (one actor)")
        ax.set_ylabel("actor RSS (MiB)")
        ax.grid(alpha=0.3)
        path = folder / "scale_sessions.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        written.append(path)
    if "runs" in latest:
        pts = latest["runs"]["points"]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [p["concurrency"] for p in pts]
        ax.plot(xs, [p["runs_per_s"] for p in pts], marker="o", label="runs/s")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent durable runs")
        ax.set_ylabel("runs/s")
        ax2 = ax.twinx()
        ax2.plot(xs, [p["p95_ms"] for p in pts], marker="s", color="tab:red", label="p95 ms")
        ax2.set_ylabel("p95 latency (ms)")
        ax.grid(alpha=0.3)
        path = folder / "scale_runs.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["sessions", "runs", "table", "plot"])
    p.add_argument("--levels", type=_levels, default=None)
    p.add_argument("--seconds", type=float, default=10.0, help="runs: seconds per level")
    p.add_argument("--address", default=None, help="Ray cluster (default: embedded)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    if args.what in ("table", "plot"):
        data = json.loads(args.out.read_text())
        if args.what == "table":
            print(table(data))
        else:
            for path in plot(data, HERE):
                print(path)
        return
    import lumos_ray as lr

    lr.connect(address=args.address)
    if args.what == "sessions":
        result = asyncio.run(sessions(args.levels or [100, 1000, 10_000]))
    else:
        result = asyncio.run(runs(args.levels or [1, 4, 16, 64, 256], args.seconds))
    result["machine"] = _machine()
    result["command"] = "benchmarks/scale_study.py " + " ".join(sys.argv[1:])
    _append(args.out, result)
    print(table([result]))


if __name__ == "__main__":
    main()
