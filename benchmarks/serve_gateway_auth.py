"""Gateway latency with auth + rate limit + plan quota + metering ON vs OFF.

In-process: the real gateway app (``build_app``) driven through httpx's ASGI
transport, so what is measured is the gateway's own per-request work (no socket, no
Serve proxy, no model): ``GET /v1/models`` at 16 and 64 concurrent clients. ON = the
platform (a SQLite store in a temp dir: key check cached per replica; the monthly
quota charged in memory by the admission service and written to the store in one
transaction per flush interval) plus a per-key and per-tenant rate limit. OFF = no
keys, no limits. Both series send the same ``Authorization`` header (OFF ignores it),
so in process, where client and gateway share one thread, the client's work per
request is the same in both and only the gateway's differs.

Modes:

* ``--http``: the same app served by uvicorn in a child process on 127.0.0.1 (what a
  client of a gateway replica's own listener sees: socket, HTTP parsing, keep-alive
  connections), driven by aiohttp; admission in the process as below;
* default: admission in the process (``LocalAdmission``: what a gateway without Ray
  runs; the same buckets and ``QuotaLedger`` as the actor, no round trip);
* ``--cluster``: a local Ray cluster is started and the gateway is built as a Serve
  replica builds it (``cluster=True``), so every admission is a batched call to the
  app's admission actor (``<app>-ratelimit``) -- the real multi-replica path, minus
  the Serve proxy and socket, which both modes leave out;
* ``--http --cluster``: both: the child joins the local Ray cluster and builds the
  gateway as a Serve replica does, and is driven over HTTP from this process (what a
  client of a multi-replica gateway sees; the load generator is not a Ray driver).

    .venv/bin/python benchmarks/serve_gateway_auth.py [--requests 2000] [--rounds 5] \\
        [--cluster] [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any


def _app_name(pid: int, on: bool) -> str:
    """The Serve app name of the gateway built in process ``pid`` (its admission
    actor is named after it)."""
    return f"lumos-serve-bench-{pid}-{int(on)}"


def _app(on: bool, tmp: str, cluster: bool = False) -> tuple[Any, Any, dict[str, str]]:
    from lumos_ray.serve import GatewayConfig, QuotaConfig, ServeConfig
    from lumos_ray.serve._gateway import Gateway, build_app

    headers: dict[str, str] = {}
    if on:
        from lumos_ray.platform import Platform

        url = f"sqlite:///{tmp}/bench.db"
        p = Platform(url)
        p.create_tenant("bench", "enterprise")
        headers = {
            "Authorization": "Bearer " + p.create_key("bench", "developer").secret_shown_once
        }
        gw = GatewayConfig(
            api_keys_env=None,
            platform=True,
            platform_store_url=url,
            quota=QuotaConfig(requests_per_minute=10**9, tenant_requests_per_minute=10**9),
        )
    else:
        from lumos_ray.platform._keys import new_key

        # The same header a client of an ON gateway sends (a gateway with auth off
        # ignores it): the client's own work per request is then the same in both
        # series, and in process only the gateway's work differs.
        headers = {"Authorization": "Bearer " + new_key()[2]}
        gw = GatewayConfig(api_keys_env=None)
    cfg = ServeConfig(
        app_name=_app_name(os.getpid(), on),
        gateway=gw,
        adapters_dir=os.path.join(tmp, "adapters"),
    )
    gateway = Gateway(cfg.model_dump_json(), llm_handles={}, cluster=cluster)
    return gateway, build_app(), headers


async def _run(
    app: Any, headers: dict[str, str], clients: int, total: int
) -> tuple[list[float], float]:
    """Latencies of ``total`` requests from ``clients`` concurrent clients, and the
    throughput (requests/s). Each client yields to the event loop after each request,
    as a real server does on its socket: without it a request with no I/O on its path
    never yields, so one client ran every remaining request while the others waited,
    and a request that waited for the admission actor was charged for all of them."""
    import httpx

    lat: list[float] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        for _ in range(50):  # warm-up
            await c.get("/v1/models", headers=headers)
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                r = await c.get("/v1/models", headers=headers)
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                await asyncio.sleep(0)

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t_start
    return lat, total / wall


def _close(gateway: Any, cluster: bool) -> None:
    """Write the last counts and remove the admission actor (cluster mode)."""
    if gateway.admission is None:
        return
    if cluster:
        from lumos_ray import runtime

        asyncio.run(gateway.admission.flush())
        runtime.kill_actor(gateway.admission.name)
    else:
        gateway.admission.close()


def _serve_http(
    on: bool, tmp: str, port: int, ready: Any, ray_at: tuple[str, str] | None = None
) -> None:
    """Child process: build the app as ``_app`` does and serve it on 127.0.0.1.
    ``ray_at`` (address, namespace): join that Ray cluster first and build the app as
    a Serve replica does (``cluster=True``: admission through the app's actor)."""
    import uvicorn

    from lumos_ray.serve._gateway import freeze_startup_heap

    if ray_at is not None:
        from lumos_ray import runtime

        runtime.connect(ray_at[0], namespace=ray_at[1])
    gateway, app, headers = _app(on, tmp, cluster=ray_at is not None)
    freeze_startup_heap()  # as a gateway replica does once it is built
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    ready.put(headers)
    server.run()  # until the parent's SIGTERM (uvicorn stops gracefully)
    _close(gateway, ray_at is not None)


async def _run_http(
    port: int, headers: dict[str, str], clients: int, total: int
) -> tuple[list[float], float]:
    """``_run`` over real HTTP: one keep-alive connection per client."""
    import aiohttp

    lat: list[float] = []
    url = f"http://127.0.0.1:{port}/v1/models"
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as c:
        for _ in range(50):  # warm-up
            async with c.get(url, headers=headers) as r:
                await r.read()
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                async with c.get(url, headers=headers) as r:
                    body = await r.read()
                lat.append(time.perf_counter() - t0)
                assert r.status == 200, body

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t_start
    return lat, total / wall


class _HttpServer:
    """A gateway (``_serve_http``) in a child process, listening on 127.0.0.1."""

    def __init__(self, on: bool, ray_at: tuple[str, str] | None) -> None:
        import multiprocessing as mp
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._tmp = tempfile.TemporaryDirectory()
        self.on, self.ray_at = on, ray_at
        ctx = mp.get_context("spawn")
        ready = ctx.Queue()
        self.proc = ctx.Process(
            target=_serve_http, args=(on, self._tmp.name, self.port, ready, ray_at), daemon=True
        )
        self.proc.start()
        try:
            self.headers: dict[str, str] = ready.get(timeout=120)
            deadline = time.monotonic() + 60
            while True:  # the listener binds after the app is built
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def run(self, clients: int, requests: int) -> tuple[float, float, float]:
        """(p50 s, p95 s, requests/s) of one block of requests."""
        lat, rps = asyncio.run(_run_http(self.port, self.headers, clients, requests))
        lat.sort()
        return statistics.median(lat), lat[int(0.95 * len(lat))], rps

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(30)
        self._tmp.cleanup()
        if self.on and self.ray_at is not None:
            # The child is stopped by a signal before it can remove its admission actor
            # (_close): remove it here, so rounds do not pile up idle actors.
            from lumos_ray import runtime
            from lumos_ray.serve._ratelimit import limiter_actor_name

            runtime.kill_actor(limiter_actor_name(_app_name(self.proc.pid, True)))


def _interleaved_http(
    rounds: int, blocks: int, requests: int, ray_at: tuple[str, str] | None
) -> None:
    """OFF and ON served at once, the load alternating between them block by block.

    Both gateways are up (and the ON one's admission actor and leases warm) before
    anything is measured, and each OFF block has an ON block next to it in time, so a
    drift of this shared machine's speed lands on both: the ratio of each adjacent
    pair is what is reported (median and range), plus each series' median of its
    blocks. Each round starts a fresh pair of processes (a process's own luck, e.g.
    its memory layout, is not carried through every block). The idle ON gateway's
    background work (timers, the actor's flush thread) runs during OFF blocks too."""
    levels = (1, 16, 64)
    per: dict[int, dict[bool, list[tuple[float, float, float]]]] = {
        c: {False: [], True: []} for c in levels
    }
    ratios: dict[int, list[tuple[float, float, float]]] = {c: [] for c in levels}
    for r in range(rounds):
        servers = {on: _HttpServer(on, ray_at) for on in (False, True)}
        try:
            for on in (False, True):  # warm-up: connections, caches, the actor, a lease
                servers[on].run(64, 2000)
            for clients in levels:
                for b in range(blocks):
                    order = (False, True) if (r + b) % 2 == 0 else (True, False)
                    got = {on: servers[on].run(clients, requests) for on in order}
                    for on in order:
                        per[clients][on].append(got[on])
                    ratios[clients].append(
                        (
                            got[True][0] / got[False][0],
                            got[True][1] / got[False][1],
                            got[False][2] / got[True][2],
                        )
                    )
        finally:
            for server in servers.values():
                server.stop()
    for clients in levels:
        med = {
            on: [statistics.median(x[i] for x in per[clients][on]) for i in range(3)]
            for on in (False, True)
        }
        rr = [sorted(x[i] for x in ratios[clients]) for i in range(3)]
        off, on_ = med[False], med[True]
        print(
            f"clients={clients:3d} p50 off {off[0] * 1e3:.3f} ms on {on_[0] * 1e3:.3f} ms"
            f"  p95 off {off[1] * 1e3:.3f} ms on {on_[1] * 1e3:.3f} ms"
            f"  req/s off {off[2]:.0f} on {on_[2]:.0f}  | {len(rr[0])} adjacent pairs, on/off:"
            f" p50 {statistics.median(rr[0]):.2f}x [{rr[0][0]:.2f}-{rr[0][-1]:.2f}]"
            f" p95 {statistics.median(rr[1]):.2f}x [{rr[1][0]:.2f}-{rr[1][-1]:.2f}]"
            f" time per request {statistics.median(rr[2]):.2f}x",
            flush=True,
        )


def _one(on: bool, clients: int, requests: int, cluster: bool) -> tuple[float, float, float]:
    """(p50 s, p95 s, requests/s) of one series on a fresh in-process gateway app."""
    from lumos_ray.serve._gateway import _GATEWAY

    with tempfile.TemporaryDirectory() as tmp:
        gateway, app, headers = _app(on, tmp, cluster)
        lat, rps = asyncio.run(_run(app, headers, clients, requests))
        _close(gateway, cluster)
        _GATEWAY.clear()
    lat.sort()
    return statistics.median(lat), lat[int(0.95 * len(lat))], rps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--cluster", action="store_true", help="admission through the app's Ray actor")
    ap.add_argument("--http", action="store_true", help="real HTTP to uvicorn in a child process")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="in process: OFF and ON alternate R times per client count (the order flips "
        "each round); --http: R fresh pairs of gateways; medians and per-pair ratios",
    )
    ap.add_argument(
        "--blocks", type=int, default=3,
        help="--http: adjacent OFF/ON blocks of --requests each, per client count and round",
    )  # fmt: skip
    args = ap.parse_args()
    ray_at = None
    if args.cluster:
        from lumos_ray import runtime

        info = runtime.connect(num_cpus=2)
        ray_at = (info.address, info.namespace)
    mode = "cluster (admission actor)" if args.cluster else "in-process admission"
    print(f"mode: {mode}{', over HTTP (uvicorn, 127.0.0.1)' if args.http else ''}")
    print(f"load at start: {os.getloadavg()}")
    if args.http:
        _interleaved_http(args.rounds, args.blocks, args.requests, ray_at)
    for clients in (1, 16, 64) if not args.http else ():
        series: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        ratios: list[tuple[float, float]] = []
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            got = {on: _one(on, clients, args.requests, args.cluster) for on in order}
            for on in order:
                series[on].append(got[on])
            ratios.append((got[True][0] / got[False][0], got[True][1] / got[False][1]))

        med = {
            on: [statistics.median(x[i] for x in series[on]) for i in range(3)]
            for on in (False, True)
        }
        p50r = sorted(x[0] for x in ratios)
        p95r = sorted(x[1] for x in ratios)
        off, on_ = med[False], med[True]
        print(
            f"clients={clients:3d} p50 off {off[0] * 1e3:.3f} ms on {on_[0] * 1e3:.3f} ms"
            f"  p95 off {off[1] * 1e3:.3f} ms on {on_[1] * 1e3:.3f} ms"
            f"  req/s off {off[2]:.0f} on {on_[2]:.0f}  | per-round on/off:"
            f" p50 {statistics.median(p50r):.2f}x [{p50r[0]:.2f}-{p50r[-1]:.2f}]"
            f" p95 {statistics.median(p95r):.2f}x [{p95r[0]:.2f}-{p95r[-1]:.2f}]",
            flush=True,
        )
    print(f"load at end: {os.getloadavg()}")
    if args.cluster:
        from lumos_ray import runtime

        runtime.shutdown()


if __name__ == "__main__":
    main()
