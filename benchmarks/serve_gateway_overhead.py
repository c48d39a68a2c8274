"""Gateway overhead vs a bare Ray Serve no-op deployment (non-model routes).

Both run in the same Serve instance, side by side, in one run:
- baseline: ``/noop`` -- a plain Serve deployment whose ``__call__`` returns a dict;
- gateway: ``/health`` (routing + middleware + metrics) and ``/v1/models`` (also API-key
  auth, the quota hook and the adapter registry listing) of our FastAPI ingress.

The gateway here is deployed without model replicas (its LLM handle map is empty):
non-model routes never touch them, and a vLLM engine would only add CPU noise.
p50/p95 per concurrency level; ratio = gateway / baseline.

    .venv/bin/python benchmarks/serve_gateway_overhead.py [--requests 400] [--levels 1,16,50,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import tempfile
import time

KEY = "sk-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, concurrency: int, total: int, headers: dict[str, str]) -> list[float]:
    import httpx

    lat: list[float] = []
    per_client = max(1, total // concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
        await client.get(url)  # warm the connection pool and the route

        async def worker() -> None:
            for _ in range(per_client):
                t0 = time.perf_counter()
                r = await client.get(url)
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400, help="requests per level and route")
    ap.add_argument("--levels", default="1,16,50,64")
    args = ap.parse_args()
    os.environ.setdefault("LUMOS_HOME", tempfile.mkdtemp(prefix="lumos-bench-"))

    from ray import serve

    from lumos_ray import runtime
    from lumos_ray.serve import GatewayConfig, ServeConfig
    from lumos_ray.serve._gateway import Gateway, build_app

    runtime.connect(num_cpus=4)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(name="lumos-serve-bench-noop", max_ongoing_requests=1000)
    class NoOp:
        async def __call__(self, request: object) -> dict[str, str]:
            return {"status": "ok"}

    cfg = ServeConfig(gateway=GatewayConfig(port=port, api_keys=[KEY]))
    gateway = serve.deployment(
        serve.ingress(build_app)(Gateway),
        name="lumos-serve-gateway",
        max_ongoing_requests=1000,
    ).bind(cfg.model_dump_json(), {}, None)
    serve.run(NoOp.bind(), name="lumos-serve-bench-noop", route_prefix="/noop")
    serve.run(gateway, name="lumos-serve-bench", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    routes = {
        "baseline /noop": (base + "/noop", {}),
        "gateway /health": (base + "/health", {}),
        "gateway /v1/models": (base + "/v1/models", {"Authorization": f"Bearer {KEY}"}),
    }
    results = []
    try:
        for level in [int(x) for x in args.levels.split(",")]:
            row: dict[str, object] = {"concurrency": level}
            total = args.requests if level > 1 else max(100, args.requests // 2)
            for name, (url, headers) in routes.items():
                lat = asyncio.run(_load(url, level, total, headers))
                row[name] = {
                    "p50_ms": round(_pct(lat, 0.50), 2),
                    "p95_ms": round(_pct(lat, 0.95), 2),
                    "mean_ms": round(statistics.mean(lat) * 1000, 2),
                    "n": len(lat),
                }
            b = row["baseline /noop"]
            for name in ("gateway /health", "gateway /v1/models"):
                g = row[name]
                g["p50_ratio"] = round(g["p50_ms"] / b["p50_ms"], 2)
                g["p95_ratio"] = round(g["p95_ms"] / b["p95_ms"], 2)
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        serve.shutdown()
        runtime.shutdown()

    print("\n| clients | route | p50 ms | p95 ms | p50 ratio | p95 ratio |")
    print("|---|---|---|---|---|---|")
    for row in results:
        for name in routes:
            r = row[name]
            print(
                f"| {row['concurrency']} | {name} | {r['p50_ms']} | {r['p95_ms']} | "
                f"{r.get('p50_ratio', '1.0')} | {r.get('p95_ratio', '1.0')} |"
            )


if __name__ == "__main__":
    main()
