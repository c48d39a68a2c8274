"""Dashboard pages vs the JSON API for the same data, over real HTTP, with 10,000 runs.

A local Ray cluster, the real gateway app on Ray Serve (platform on: a tenant, a
developer key), the store on SQLite by default or the PostgreSQL URL given. The
tenant's store gets ``--runs`` runs (written in batches of 1,000 through the store's
batch writer; 6 workflows x 6 statuses), plus one real run of the shipped
``approval`` workflow started over the API (it suspends: its page has steps, events
and the resume form). Then each page and its JSON counterpart are fetched
``--repeat`` times, one after the other, by a signed-in client (session cookie for
/ui, bearer key for /v1); p50 and p95 in milliseconds:

* runs list, first page (50)        vs ``GET /v1/runs?limit=50``
* runs list filtered (status + workflow) vs ``GET /v1/runs?status=...&limit=50``
  (the API has no workflow filter)
* runs list, a deep page (keyset cursor after 5,000 runs): no API counterpart
* a run's page (steps, events, form)  vs ``GET /v1/runs/{id}`` + ``/checkpoints``
* usage page (chart data)           vs ``GET /v1/usage``

    .venv/bin/python benchmarks/dashboard_pages.py [--runs 10000] [--repeat 30]
        [--postgres | --store-url postgresql+psycopg://...]

``--postgres`` starts a throwaway PostgreSQL server (tests/_postgres.py: Debian's
binaries, a free 127.0.0.1 port) and stops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fill(tenant: str, n: int) -> None:
    """``n`` runs in the tenant's store, 1,000 per transaction."""
    from lumos_ray.store import open_store
    from lumos_ray.store._batch import RunCreate, write_batch

    store = open_store(tenant_id=tenant)
    states = ["pending", "running", "suspended", "succeeded", "failed", "cancelled"]
    done = 0
    while done < n:
        batch = [
            RunCreate(
                run_id=f"bench-{i:06d}",
                workflow=f"wf-{i % 6}",
                version="v1",
                input={"i": i, "text": "x" * 200},
                status=states[(i // 6) % 6],
            )
            for i in range(done, min(done + 1000, n))
        ]
        write_batch(store, batch)
        done += len(batch)


def _time(client: Any, path: str, repeat: int, **kw: Any) -> tuple[float, float, int]:
    """(p50 ms, p95 ms, bytes) of ``repeat`` sequential GETs (one warm-up first)."""
    r = client.get(path, **kw)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = client.get(path, **kw)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], len(r.content)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--store-url", default=None, help="default: SQLite in a temp LUMOS_HOME")
    ap.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server")
    args = ap.parse_args()
    pg = None
    if args.postgres:
        import sys

        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests._postgres import start_postgres

        pg = start_postgres()
        args.store_url = pg.create_database("dashbench")
    try:
        _bench(args)
    finally:
        if pg is not None:
            pg.stop()


def _bench(args: argparse.Namespace) -> None:
    home = tempfile.mkdtemp(prefix="lumos-bench-dash-")
    os.environ["LUMOS_HOME"] = home
    if args.store_url:
        os.environ["LUMOS_STORE_URL"] = args.store_url

    import httpx

    from lumos_ray import runtime  # before ray: the embedded cluster stays on 127.0.0.1
    from lumos_ray import serve as lserve
    from lumos_ray.config import LumosSettings
    from lumos_ray.platform import Platform
    from lumos_ray.serve import GatewayConfig, ServeConfig, ServedEmbeddingConfig
    from lumos_ray.serve._app import _start_serve, gateway_deployment

    runtime.connect(settings=LumosSettings.from_env(num_cpus=4))
    from ray import serve

    try:
        p = Platform()
        p.create_tenant("bench", "enterprise")
        key = p.create_key("bench", "developer").secret_shown_once
        t0 = time.perf_counter()
        _fill("bench", args.runs)
        print(f"stored {args.runs} runs in {time.perf_counter() - t0:.1f} s")
        port = _free_port()
        cfg = ServeConfig(
            app_name="lumos-serve-dashbench",
            gateway=GatewayConfig(port=port, num_replicas=1, platform=True),
            embeddings=ServedEmbeddingConfig(enabled=False),
            adapters_dir=os.path.join(home, "adapters"),
        )
        _start_serve(cfg)
        serve.run(gateway_deployment(cfg, {}, None), name=cfg.app_name, route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        bearer = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, timeout=120) as c:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if c.get("/v1/models", headers=bearer).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the gateway never answered"
                time.sleep(0.5)
            r = c.post(
                "/v1/workflows/approval/runs", json={"input": {"amount": 120}}, headers=bearer
            )
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            while c.get(f"/v1/runs/{run_id}", headers=bearer).json()["status"] != "suspended":
                time.sleep(0.2)
            r = c.post(
                "/ui/login", data={"key": key}, headers={"Origin": url}, follow_redirects=False
            )
            assert r.status_code == 303, r.text
            cookies = {"lumos_session": key}
            # A cursor 5,000 runs deep, as the page's "Older" link makes it.
            from lumos_ray.serve._dashboard._data import encode_cursor
            from lumos_ray.store import open_store

            rows = open_store(tenant_id="bench").runs_page(limit=5000, newest_first=True)
            deep = encode_cursor(rows[-1]["created_at"], rows[-1]["id"])
            rep = args.repeat
            pairs = [
                ("runs list, first page", "/ui/runs", "/v1/runs?limit=50"),
                (
                    "runs list, status+workflow filter",
                    "/ui/runs?status=failed&workflow=wf-3",
                    "/v1/runs?status=failed&limit=50",
                ),
                ("runs list, page after 5,000 runs", f"/ui/runs?cursor={deep}", None),
                ("run detail", f"/ui/runs/{run_id}", f"/v1/runs/{run_id}"),
                ("run checkpoints (API)", None, f"/v1/runs/{run_id}/checkpoints"),
                ("usage", "/ui/usage", "/v1/usage"),
            ]
            results = []
            for name, page, api in pairs:
                row: dict[str, Any] = {"what": name}
                if page:
                    p50, p95, size = _time(c, page, rep, cookies=cookies)
                    row.update(page_p50=p50, page_p95=p95, page_bytes=size)
                if api:
                    p50, p95, size = _time(c, api, rep, headers=bearer)
                    row.update(api_p50=p50, api_p95=p95, api_bytes=size)
                results.append(row)
        lserve.stop(cfg.app_name)
    finally:
        runtime.shutdown()
    backend = "postgresql" if args.store_url else "sqlite"
    print(f"\nstore: {backend}, {args.runs} runs, {args.repeat} sequential requests each")
    print(f"load: {open('/proc/loadavg').read().strip()}")
    print(f"{'':36} {'page p50/p95 ms':>18} {'API p50/p95 ms':>18}")
    for r in results:
        page = f"{r['page_p50']:.1f} / {r['page_p95']:.1f}" if "page_p50" in r else "-"
        api = f"{r['api_p50']:.1f} / {r['api_p95']:.1f}" if "api_p50" in r else "-"
        print(f"{r['what']:36} {page:>18} {api:>18}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
