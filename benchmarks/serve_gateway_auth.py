"""Gateway latency with auth + rate limit + plan quota + metering ON vs OFF.

In-process: the real gateway app (``build_app``) driven through httpx's ASGI
transport, so what is measured is the gateway's own per-request work (no socket, no
Serve proxy, no model): ``GET /v1/models`` at 16 and 64 concurrent clients. ON = the
platform (a SQLite store in a temp dir: key check cached per replica, one monthly
quota charge = one UPDATE per request) plus a per-key and per-tenant rate limit in the
process's buckets (a multi-replica deployment keeps them in one actor instead: not
measured here). OFF = no keys, no limits.

    .venv/bin/python benchmarks/serve_gateway_auth.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any


def _app(on: bool, tmp: str) -> tuple[Any, dict[str, str]]:
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
    cfg = ServeConfig(gateway=gw, adapters_dir=os.path.join(tmp, "adapters"))
    Gateway(cfg.model_dump_json(), llm_handles={})
    return build_app(), headers


async def _run(app: Any, headers: dict[str, str], clients: int, total: int) -> list[float]:
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

        await asyncio.gather(*(worker() for _ in range(clients)))
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()
    from lumos_ray.serve._gateway import _GATEWAY

    for clients in (16, 64):
        res = {}
        for on in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                app, headers = _app(on, tmp)
                lat = asyncio.run(_run(app, headers, clients, args.requests))
                _GATEWAY.clear()
            res[on] = (statistics.median(lat), sorted(lat)[int(0.95 * len(lat))])
        off, on_ = res[False], res[True]
        print(
            f"clients={clients:3d} p50 off {off[0] * 1e3:.2f} ms on {on_[0] * 1e3:.2f} ms "
            f"({on_[0] / off[0]:.2f}x)  p95 off {off[1] * 1e3:.2f} ms on {on_[1] * 1e3:.2f} ms "
            f"({on_[1] / off[1]:.2f}x)"
        )


if __name__ == "__main__":
    main()
