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

* ``gateway``: concurrent HTTP clients against the real gateway (``lumos_ray.serve.start``
  with ``models=False``: the Serve proxy on a 127.0.0.1 socket and the gateway replica,
  no model) with the platform on: every request is checked against a platform API key
  (SQLite store), admitted by the app's admission actor (per-key and per-tenant rate
  limits set very high, the plan's monthly quota) and metered. Two cheap routes per
  level: ``GET /v1/models`` and ``GET /v1/runs?limit=20`` (the runs API list: a store
  read of the tenant's 50 seeded runs). The clients are asyncio/httpx in this process
  (``serve_gateway_overhead._load``): on 2 cores they compete with the server for CPU.
  req/s = requests / wall time of the level; p50/p95 per route and level.
* ``rag``: one collection through the real pool (client -> router actor -> shard
  actor), grown cumulatively to each level with synthetic chunks and precomputed
  vectors (``rag_latency.synthetic``: not MiniLM embeddings, which would take days for
  1M chunks on 2 cores), two batches in flight so shard snapshots coalesce. At each
  level: ``warm()`` (walk matrix, communities), then p50/p95 of ``search_vector`` in
  hybrid and naive mode, and the USS (psutil ``memory_full_info``) of the router and
  shard processes (found among this process's descendants: embedded cluster only).
  ``--budget-s`` bounds the series: a level whose projected load time (at the previous
  level's rate) would pass the budget is not started, and the JSON says so.

The in-process shard at 1M chunks (no Ray, no snapshots) is ``rag_scale.py``.

Results are appended to a JSON file (``--out``, default
``benchmarks/data/scale_study.json``); ``plot`` draws PNGs next to RESULTS.md when
matplotlib is installed (it is not in the project's lock: ``pip install matplotlib``
in a separate environment, or read the tables)::

    .venv/bin/python benchmarks/scale_study.py sessions --levels 100,1000,10000
    .venv/bin/python benchmarks/scale_study.py runs --levels 1,4,16,64,256 --seconds 10
    .venv/bin/python benchmarks/scale_study.py gateway --levels 1,2,4,8,16,32,64,128
    .venv/bin/python benchmarks/scale_study.py rag --levels 10000,30000,100000,300000,1000000
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
sys.path.insert(0, str(HERE))  # the sibling benchmarks reused below
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


GW_ROUTES = {"models": "/v1/models", "runs_list": "/v1/runs?limit=20"}


def gateway(levels: list[int], requests: int) -> dict[str, Any]:
    """Concurrent clients against the real gateway, platform on (see the docstring)."""
    from serve_gateway_overhead import _free_port, _load, _pct

    from lumos_ray.platform import Platform
    from lumos_ray.runtime import current_settings
    from lumos_ray.serve import GatewayConfig, QuotaConfig, ServeConfig, start, stop
    from lumos_ray.store import open_store

    url = current_settings().resolved_store_url()
    plat = Platform(url)
    plat.create_tenant("scale", "enterprise")
    key = plat.create_key("scale", "developer").secret_shown_once
    store = open_store(url, tenant_id="scale")
    for i in range(50):
        store.create_run(f"scale-run-{i}", "scale-wf", "v1", {"i": i})
    cfg = ServeConfig(
        app_name=f"lumos-serve-scale-{os.getpid()}",
        gateway=GatewayConfig(
            host="127.0.0.1",
            port=_free_port(),
            api_keys_env=None,
            platform=True,
            platform_store_url=url,
            quota=QuotaConfig(requests_per_minute=10**9, tenant_requests_per_minute=10**9),
        ),
        adapters_dir=str(Path(current_settings().home) / "adapters"),
    )
    base = start(cfg, models=False, timeout_s=300).removesuffix("/v1")
    headers = {"Authorization": f"Bearer {key}"}
    points: list[dict[str, Any]] = []
    sent = 0
    try:
        # Untimed: the first request of a route checks the key in the store, starts the
        # admission actor's lease, imports the route's code (seconds here).
        for route in GW_ROUTES.values():
            sent += len(asyncio.run(_load(base + route, 1, 20, headers))) + 1
        for conc in levels:
            n = max(requests, conc * 4) if conc > 1 else max(100, requests // 4)
            point: dict[str, Any] = {"clients": conc}
            for name, route in GW_ROUTES.items():
                t0 = time.perf_counter()
                lat = asyncio.run(_load(base + route, conc, n, headers))
                wall = time.perf_counter() - t0
                sent += len(lat) + 1  # +1: the load's own warm-up request
                point[name] = {
                    "n": len(lat),
                    "req_per_s": round(len(lat) / wall, 1),
                    "p50_ms": round(_pct(lat, 0.50), 1),
                    "p95_ms": round(_pct(lat, 0.95), 1),
                }
            point["load_1m"] = round(os.getloadavg()[0], 1)
            points.append(point)
            print(f"[scale] gateway {point}", file=sys.stderr, flush=True)
        time.sleep(2 * cfg.gateway.quota.flush_s + 0.5)  # the admission actor's flush
        import httpx

        usage = httpx.get(base + "/v1/usage", headers=headers, timeout=30).json()
    finally:
        stop(cfg.app_name)
    return {
        "series": "gateway",
        "routes": GW_ROUTES,
        # Every request was admitted and metered: the tenant's quota use should equal it.
        "requests_sent": sent,
        "requests_metered": ((usage.get("quota") or {}).get("used") or {}).get("requests"),
        "points": points,
    }


def _rag_uss_mib() -> dict[str, float]:
    """USS of this process's RAG router and shard processes (MiB), by process title."""
    import psutil

    out: dict[str, float] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
            for cls in ("RagRouter", "RagShard"):
                if title.startswith(f"ray::{cls}"):
                    key = cls.removeprefix("Rag").lower()
                    out[key] = out.get(key, 0.0) + proc.memory_full_info().uss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {k: round(v, 1) for k, v in out.items()}


def rag(
    levels: list[int], queries: int, batch: int, budget_s: float, in_flight: int = 2
) -> dict[str, Any]:
    """One collection through the pool, grown to each level (see the docstring)."""
    import numpy as np
    import ray
    from rag_latency import DIM, pct, synthetic

    from lumos_ray.rag import CollectionConfig, RagCollection

    name = f"scale-rag-{os.getpid()}"
    coll = RagCollection.open(name, config=CollectionConfig(name=name, num_shards=1))
    coll.stats()  # router and shard are up: time loading, not actor start
    points: list[dict[str, Any]] = []
    stopped = ""
    t_start = time.perf_counter()
    loaded, load_s, rate, centres = 0, 0.0, 0.0, None
    try:
        for level in levels:
            spent = time.perf_counter() - t_start
            if loaded:
                # At the last level's rate (the slowest so far: each snapshot rewrites
                # the whole shard, so loading slows down as the collection grows).
                projected = (level - loaded) / rate
                if spent + projected > budget_s:
                    stopped = (
                        f"{level:,} chunks not started: loading {level - loaded:,} more at "
                        f"{rate:.0f} chunks/s (~{projected:.0f} s) would pass "
                        f"--budget-s {budget_s:.0f} after {spent:.0f} s"
                    )
                    break
            t0 = time.perf_counter()
            pending: list[Any] = []
            for start in range(loaded, level, batch):
                b, centres = synthetic(min(batch, level - start), seed=start, start=start)
                pending.append(coll.router.upsert_prepared.remote(b))
                del b
                if len(pending) >= in_flight:
                    ray.get(pending.pop(0))
            ray.get(pending)
            rate = (level - loaded) / max(time.perf_counter() - t0, 1e-6)
            load_s += time.perf_counter() - t0
            loaded = level
            t0 = time.perf_counter()
            ray.get(coll.router.warm.remote())
            warm_s = time.perf_counter() - t0
            assert centres is not None
            rng = np.random.default_rng(7)
            qv = centres[rng.integers(0, len(centres), queries)] + 0.6 * rng.standard_normal(
                (queries, DIM)
            ).astype(np.float32)
            qv /= np.linalg.norm(qv, axis=1, keepdims=True)
            texts = [
                f"What links Entity {int(a)} and Entity {int(c)}?"
                for a, c in rng.integers(1, 3000, (queries, 2))
            ]
            stats = coll.stats()
            point: dict[str, Any] = {
                "chunks": stats["chunks"],
                "index": stats["shards"][0]["index"],
                "load_s_total": round(load_s, 1),
                "warm_s": round(warm_s, 1),
            }
            for mode in ("hybrid", "naive"):
                for i in range(5):  # warm-up
                    ray.get(coll.router.search_vector.remote(qv[i], texts[i], mode, 10))
                lat = []
                for i in range(queries):
                    t = time.perf_counter()
                    ray.get(coll.router.search_vector.remote(qv[i], texts[i], mode, 10))
                    lat.append(time.perf_counter() - t)
                point[mode] = {
                    "p50_ms": round(pct(lat, 0.5), 1),
                    "p95_ms": round(pct(lat, 0.95), 1),
                }
            point["uss_mib"] = _rag_uss_mib()
            point["load_1m"] = round(os.getloadavg()[0], 1)
            points.append(point)
            print(f"[scale] rag {point}", file=sys.stderr, flush=True)
    finally:
        coll.drop()
    out: dict[str, Any] = {
        "series": "rag",
        "batch": batch,
        "queries_per_mode": queries,
        "budget_s": budget_s,
        "points": points,
    }
    if stopped:
        out["stopped"] = stopped
        print(f"[scale] rag stopped: {stopped}", file=sys.stderr, flush=True)
    return out


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
        elif r["series"] == "gateway":
            lines.append(
                "| clients | /v1/models req/s | p50 / p95 (ms) | /v1/runs req/s "
                "| p50 / p95 (ms) | load |"
            )
            lines.append("|---|---|---|---|---|---|")
            lines += [
                f"| {p['clients']} | {p['models']['req_per_s']} | {p['models']['p50_ms']} / "
                f"{p['models']['p95_ms']} | {p['runs_list']['req_per_s']} | "
                f"{p['runs_list']['p50_ms']} / {p['runs_list']['p95_ms']} | {p['load_1m']} |"
                for p in pts
            ]
        elif r["series"] == "rag":
            lines.append(
                "| chunks | index | hybrid p50 / p95 (ms) | naive p50 / p95 (ms) "
                "| shard USS (MiB) | router USS (MiB) | load s (total) | warm s | load |"
            )
            lines.append("|---|---|---|---|---|---|---|---|---|")
            lines += [
                f"| {p['chunks']:,} | {p['index']} | {p['hybrid']['p50_ms']} / "
                f"{p['hybrid']['p95_ms']} | {p['naive']['p50_ms']} / {p['naive']['p95_ms']} "
                f"| {p['uss_mib'].get('shard', '-')} | {p['uss_mib'].get('router', '-')} "
                f"| {p['load_s_total']} | {p['warm_s']} | {p['load_1m']} |"
                for p in pts
            ]
            if r.get("stopped"):
                lines.append(f"\nStopped: {r['stopped']}.")
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
    if "gateway" in latest:
        pts = latest["gateway"]["points"]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [p["clients"] for p in pts]
        ax2 = ax.twinx()
        for route, label, colour in (
            ("models", "/v1/models", "tab:blue"),
            ("runs_list", "/v1/runs", "tab:green"),
        ):
            ys = [p[route]["req_per_s"] for p in pts]
            ax.plot(xs, ys, marker="o", color=colour, label=f"{label} req/s")
            p95 = [p[route]["p95_ms"] for p in pts]
            ax2.plot(xs, p95, marker="s", ls="--", color=colour, label=f"{label} p95")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent HTTP clients (gateway, platform on)")
        ax.set_ylabel("req/s (solid)")
        ax2.set_yscale("log")
        ax2.set_ylabel("p95 latency (ms, dashed, log)")
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
        path = folder / "scale_gateway.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        written.append(path)
    if "rag" in latest:
        pts = latest["rag"]["points"]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [p["chunks"] for p in pts]
        ax.plot(xs, [p["hybrid"]["p95_ms"] for p in pts], marker="o", label="hybrid p95")
        ax.plot(xs, [p["naive"]["p95_ms"] for p in pts], marker="o", label="naive p95")
        ax.set_xscale("log")
        ax.set_xlabel("chunks in the collection (one shard)")
        ax.set_ylabel("query p95 (ms)")
        ax2 = ax.twinx()
        uss = [sum(p["uss_mib"].values()) / 1024 for p in pts]
        ax2.plot(xs, uss, marker="s", color="tab:red", label="USS router+shard")
        ax2.set_ylabel("RAG actors USS (GiB)")
        ax.set_ylim(bottom=0)
        ax2.set_ylim(bottom=0)
        if latest["rag"].get("stopped"):
            ax.set_title(f"stopped at {xs[-1]:,} chunks (time budget)", fontsize=8)
        ax.legend(loc="lower left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
        ax.grid(alpha=0.3)
        path = folder / "scale_rag.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["sessions", "runs", "gateway", "rag", "table", "plot"])
    p.add_argument("--levels", type=_levels, default=None)
    p.add_argument("--seconds", type=float, default=10.0, help="runs: seconds per level")
    p.add_argument("--requests", type=int, default=1000, help="gateway: requests per level")
    p.add_argument("--queries", type=int, default=200, help="rag: queries per mode and level")
    p.add_argument("--batch", type=int, default=25_000, help="rag: chunks per upsert")
    p.add_argument("--budget-s", type=float, default=840.0, help="rag: bound of the series")
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
    if args.what in ("gateway", "rag") and "LUMOS_HOME" not in os.environ:
        import tempfile

        # Its own store, keys and snapshots; set before the cluster starts (its
        # processes inherit the environment).
        os.environ["LUMOS_HOME"] = tempfile.mkdtemp(prefix=f"lumos-scale-{args.what}-")
    import lumos_ray as lr

    lr.connect(address=args.address)
    if args.what == "sessions":
        result = asyncio.run(sessions(args.levels or [100, 1000, 10_000]))
    elif args.what == "gateway":
        result = gateway(args.levels or [1, 2, 4, 8, 16, 32, 64, 128], args.requests)
    elif args.what == "rag":
        result = rag(
            args.levels or [10_000, 30_000, 100_000, 300_000, 1_000_000],
            args.queries,
            args.batch,
            args.budget_s,
        )
    else:
        result = asyncio.run(runs(args.levels or [1, 4, 16, 64, 256], args.seconds))
    result["machine"] = _machine()
    result["command"] = "benchmarks/scale_study.py " + " ".join(sys.argv[1:])
    _append(args.out, result)
    print(table([result]))


if __name__ == "__main__":
    main()
