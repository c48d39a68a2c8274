"""Gateway latency with auth + rate limit + plan quota + metering ON vs OFF.

In-process: the real gateway app (``build_app``) driven through httpx's ASGI
transport, so what is measured is the gateway's own per-request work (no socket, no
Serve proxy, no model): ``GET /v1/models`` at 16 and 64 concurrent clients. ON = the
platform (a SQLite store in a temp dir: key check cached per replica; the monthly
quota charged in memory by the admission service and written to the store in one
transaction per flush interval) plus a per-key and per-tenant rate limit. OFF = no
keys, no limits.

Two modes:

* default: admission in the process (``LocalAdmission``: what a gateway without Ray
  runs; the same buckets and ``QuotaLedger`` as the actor, no round trip);
* ``--cluster``: a local Ray cluster is started and the gateway is built as a Serve
  replica builds it (``cluster=True``), so every admission is a batched call to the
  app's admission actor (``<app>-ratelimit``) -- the real multi-replica path, minus
  the Serve proxy and socket, which both modes leave out.

    .venv/bin/python benchmarks/serve_gateway_auth.py [--requests 2000] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any


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
        gw = GatewayConfig(api_keys_env=None)
    cfg = ServeConfig(
        app_name=f"lumos-serve-bench-{os.getpid()}-{int(on)}",
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--cluster", action="store_true", help="admission through the app's Ray actor")
    args = ap.parse_args()
    from lumos_ray.serve._gateway import _GATEWAY

    if args.cluster:
        from lumos_ray import runtime

        runtime.connect(num_cpus=2)
    print(f"mode: {'cluster (admission actor)' if args.cluster else 'in-process admission'}")
    for clients in (1, 16, 64):
        res = {}
        rps = {}
        for on in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                gateway, app, headers = _app(on, tmp, args.cluster)
                lat, rps[on] = asyncio.run(_run(app, headers, clients, args.requests))
                _close(gateway, args.cluster)
                _GATEWAY.clear()
            res[on] = (statistics.median(lat), sorted(lat)[int(0.95 * len(lat))])
        off, on_ = res[False], res[True]
        print(
            f"clients={clients:3d} p50 off {off[0] * 1e3:.2f} ms on {on_[0] * 1e3:.2f} ms "
            f"({on_[0] / off[0]:.2f}x)  p95 off {off[1] * 1e3:.2f} ms on {on_[1] * 1e3:.2f} ms "
            f"({on_[1] / off[1]:.2f}x)  req/s off {rps[False]:.0f} on {rps[True]:.0f}"
        )
    if args.cluster:
        from lumos_ray import runtime

        runtime.shutdown()


if __name__ == "__main__":
    main()
