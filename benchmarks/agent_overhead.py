"""Framework overhead per agent step: lumos_ray vs a bare Ray actor vs LangGraph / CrewAI.

One command prints the whole side-by-side table (and writes JSON)::

    .venv/bin/python benchmarks/agent_overhead.py --setup-venv   # once: .venv-bench
    .venv/bin/python benchmarks/agent_overhead.py --json-out /tmp/agent_overhead.json

What is compared (see ``_bench_frameworks/_harness.py`` for the exact definitions):

* one *step* = one agent turn: model call that requests ``add(a=1, b=2)`` -> the tool
  runs -> model call that answers ``"3"``; every turn on a fresh thread id; the
  answer is checked. The fake model of every framework decides with the same
  function (``scripted_decision``), wrapped in that framework's own model type;
  the tool is the same sync ``add`` in every framework.
* lumos_ray: ``Agent(...).deploy()`` then ``await handle.run(...)`` from the driver,
  with run-store persistence (default) and with ``MemoryConfig(persist=False)``.
* bare Ray actor (the floor): one async actor method that calls the same model
  function and the tool inline and keeps the thread's messages in a dict, called
  the same way from the driver.
* LangGraph (``create_react_agent`` + ``InMemorySaver`` / ``AsyncSqliteSaver``) and
  CrewAI (``Crew.copy().akickoff`` with a ``BaseLLM`` subclass doing native tool
  calls) run in ``.venv-bench`` (never in the product's lock): one
  ``_bench_frameworks/run_frameworks.py --serve`` subprocess per baseline, driven
  rep by rep over a pipe with JSON lines.
* concurrency 1 and 100 (100 asyncio workers in the driver, closed loop);
  overhead per step = p50 latency (N=1) or wall/turns (N=100) minus the model's and
  tool's own time (a few microseconds, measured).
* memory per idle session: 10,000 threads (one turn each) on one agent actor; the
  actor process's RSS/USS before and after, divided by 10,000.

The machine is shared: the reps of all frameworks are interleaved (round 1 of
everyone, then round 2, ...) so load drift hits them alike, and every number is the
median over rounds. Results and their reading: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FRAMEWORKS_DIR = HERE / "_bench_frameworks"
sys.path.insert(0, str(FRAMEWORKS_DIR))  # before runtime.connect: workers inherit sys.path

from _harness import (  # noqa: E402
    EXPECTED,
    calibrate,
    one_rep,
    overhead_of,
    own_time_us,
    scripted_decision,
    summarize,
)

BENCH_VENV = Path(os.environ.get("LUMOS_BENCH_VENV", ROOT / ".venv-bench"))
REQUIREMENTS = HERE / "requirements-bench.txt"
EXTERNAL = ["langgraph:memory", "langgraph:sqlite", "crewai"]
BARE = "bare Ray actor"


# ------------------------------------------------------------------ benchmark venv setup
def setup_venv() -> None:
    """Create ``.venv-bench`` (Python 3.11) with the pinned baseline frameworks.

    uv when present (seconds), else ``python3.11 -m venv`` + pip. The venv ignores
    itself in git (a ``.gitignore`` of ``*`` inside it), so nothing shared changes.
    """
    py = shutil.which("python3.11") or sys.executable
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-p", py, str(BENCH_VENV)], check=True)
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--python",
                str(BENCH_VENV / "bin" / "python"),
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
        )
    else:
        subprocess.run([py, "-m", "venv", str(BENCH_VENV)], check=True)
        pip = [str(BENCH_VENV / "bin" / "python"), "-m", "pip"]
        subprocess.run([*pip, "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    (BENCH_VENV / ".gitignore").write_text("*\n")
    print(f"ready: {BENCH_VENV}")


# --------------------------------------------------------------- lumos side definitions
def bench_model_fn(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    """The shared scripted decision as a lumos ``FunctionModel`` function."""
    from lumos_ray.testing import call_tool, reply

    last = messages[-1]
    kind, payload = scripted_decision(last.get("role", "user"), last.get("content"))
    return call_tool("add", **payload) if kind == "call" else reply(payload)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def aadd(a: int, b: int) -> int:
    """Add two integers (async variant: no worker-thread hop in lumos)."""
    return a + b


class BareAgentActor:
    """The floor: the same model function and tool, inline in one async actor method."""

    def __init__(self) -> None:
        from lumos_ray.testing import FunctionModel

        self.model = FunctionModel(bench_model_fn)
        self.threads: dict[str, list[dict[str, Any]]] = {}

    async def run(self, input: str, thread_id: str) -> str | None:
        hist = self.threads.setdefault(thread_id, [])
        msgs = [*hist, {"role": "user", "content": input}]
        for _ in range(5):
            resp = await self.model.chat(msgs, None)
            msgs.append(resp.to_message())
            if not resp.tool_calls:
                break
            for c in resp.tool_calls:
                out = add(**json.loads(c.arguments))
                msgs.append({"role": "tool", "tool_call_id": c.id, "content": str(out)})
        hist.extend(msgs[len(hist) :])
        return resp.content

    def pid(self) -> int:
        return os.getpid()


def _deploy(name: str, persist: bool, async_tool: bool = False) -> Any:
    from lumos_ray.actors.agent import Agent, MemoryConfig
    from lumos_ray.testing import FunctionModel
    from lumos_ray.tools._api import tool

    t = tool(aadd if async_tool else add, name="add")
    return Agent(
        name=name,
        model=FunctionModel(bench_model_fn),
        tools=[t],
        memory=MemoryConfig(persist=persist),
    ).deploy()


class Local:
    """A contender measured in this process (lumos_ray variants, the bare actor)."""

    def __init__(self, label: str, turn: Any, reps: int) -> None:
        self.label, self.turn, self.reps = label, turn, reps
        self.versions: dict[str, str] = {}

    async def calibrate(self, n: int, target_rep_s: float) -> int:
        return await calibrate(self.turn, n, target_rep_s=target_rep_s)

    async def rep(self, n: int, per_worker: int) -> dict[str, float]:
        return await one_rep(self.turn, n, per_worker)

    def close(self) -> None:
        pass


class External:
    """A baseline in ``.venv-bench``, driven rep by rep over a pipe (_harness.serve)."""

    def __init__(self, framework: str, reps: int) -> None:
        self.label, self.reps = framework, reps
        py = BENCH_VENV / "bin" / "python"
        if not py.exists():
            raise RuntimeError(f"{py} missing: run with --setup-venv first")
        self.proc = subprocess.Popen(
            [
                str(py),
                str(FRAMEWORKS_DIR / "run_frameworks.py"),
                "--framework",
                framework,
                "--serve",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.versions: dict[str, str] = {}

    def _recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                msg = json.loads(line[2:])
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg
        raise RuntimeError(f"{self.label} exited with code {self.proc.wait()}")

    def ready(self) -> None:
        self.versions = self._recv().get("versions", {})

    def _ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._recv()

    async def calibrate(self, n: int, target_rep_s: float) -> int:
        return int(
            self._ask(cmd="calibrate", concurrency=n, target_rep_s=target_rep_s)["per_worker"]
        )

    async def rep(self, n: int, per_worker: int) -> dict[str, float]:
        return self._ask(cmd="rep", concurrency=n, per_worker=per_worker)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._ask(cmd="quit")
            except Exception:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def lumos_contenders(reps: int) -> list[Local]:
    """lumos_ray variants and the bare actor, deployed on the connected cluster."""
    import ray

    out = []
    for label, name, persist, async_tool in [
        ("lumos_ray (persist=True, default)", "bench-persist", True, False),
        ("lumos_ray (persist=False)", "bench-mem", False, False),
        ("lumos_ray (persist=False, async tool)", "bench-async", False, True),
    ]:
        h = _deploy(name, persist, async_tool)

        async def turn(tid: str, h: Any = h) -> str | None:
            return (await h.run("What is 1 + 2?", thread_id=tid)).output

        out.append(Local(label, turn, reps))
    bare = (
        ray.remote(BareAgentActor)
        .options(name="bench-bare", max_concurrency=10_000, lifetime="detached")
        .remote()
    )

    async def bare_turn(tid: str) -> str | None:
        return await bare.run.remote("What is 1 + 2?", tid)

    out.append(Local(BARE, bare_turn, reps))
    return out


async def interleaved(
    contenders: list[Any], concurrency: list[int], reps: int, target_rep_s: float, own: float
) -> dict[str, dict[int, dict[str, Any]]]:
    """For each N: calibrate everyone, then rep 1 of everyone, rep 2 of everyone, ...
    (order rotated each round), so a load change on the shared machine hits all
    contenders alike; medians over reps."""
    table: dict[str, dict[int, dict[str, Any]]] = {c.label: {} for c in contenders}
    for c in contenders:  # first calls (actor start, imports) stay out of the sizing
        await c.calibrate(1, 0.1)
    for n in concurrency:
        sizes = {}
        for c in contenders:
            sizes[c.label] = await c.calibrate(n, target_rep_s)
        rows: dict[str, list[dict[str, float]]] = {c.label: [] for c in contenders}
        for r in range(reps):
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for c in order:
                if r < c.reps:
                    rows[c.label].append(await c.rep(n, sizes[c.label]))
        for c in contenders:
            table[c.label][n] = summarize(rows[c.label], n, own)
            _log(c.label, [table[c.label][n]])
    return table


async def _idle_memory(label: str, run: Any, pid: int, n_sessions: int) -> dict[str, Any]:
    """RSS/USS of process ``pid`` before and after ``n_sessions`` one-turn threads
    (100 in flight), divided by the number of sessions."""
    import psutil

    proc = psutil.Process(pid)
    await asyncio.sleep(0.5)
    before = proc.memory_full_info()
    t0 = time.perf_counter()

    async def worker(i: int) -> int:
        done = 0
        for j in range(i, n_sessions, 100):
            out = await run(f"idle-{j}")
            if out != EXPECTED:
                raise RuntimeError(f"wrong answer {out!r}")
            done += 1
        return done

    done = sum(await asyncio.gather(*(worker(i) for i in range(100))))
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(1.0)
    after = proc.memory_full_info()
    return {
        "label": label,
        "sessions": done,
        "rss_before_mib": before.rss / 2**20,
        "rss_after_mib": after.rss / 2**20,
        "rss_per_session_kib": (after.rss - before.rss) / done / 1024,
        "uss_per_session_kib": (after.uss - before.uss) / done / 1024,
        "fill_s": elapsed,
    }


async def idle_session_memory(n_sessions: int) -> list[dict[str, Any]]:
    """Memory per idle session: lumos (persist on / off) and the bare actor's floor."""
    import ray

    out = []
    for label, name, persist in [
        ("lumos_ray (persist=True, default)", "bench-idle-p", True),
        ("lumos_ray (persist=False)", "bench-idle-m", False),
    ]:
        h = _deploy(name, persist)

        async def run(tid: str, h: Any = h) -> str | None:
            return (await h.run("What is 1 + 2?", thread_id=tid)).output

        assert await run("warmup") == EXPECTED
        pid = (await h.actor("warmup").info.remote())["pid"]
        res = await _idle_memory(label, run, pid, n_sessions)
        res["threads_cached"] = (await h.actor("warmup").info.remote())["threads_cached"]
        out.append(res)
        print(f"[bench] memory {res}", file=sys.stderr, flush=True)
        ray.kill(h.actor("warmup"))
    bare = (
        ray.remote(BareAgentActor)
        .options(name="bench-idle-bare", max_concurrency=10_000, lifetime="detached")
        .remote()
    )

    async def bare_run(tid: str) -> str | None:
        return await bare.run.remote("What is 1 + 2?", tid)

    assert await bare_run("warmup") == EXPECTED
    res = await _idle_memory(BARE, bare_run, await bare.pid.remote(), n_sessions)
    out.append(res)
    print(f"[bench] memory {res}", file=sys.stderr, flush=True)
    ray.kill(bare)
    return out


def _connect_with_retry(attempts: int = 3) -> None:
    """runtime.connect, retried: on a loaded shared machine Ray's raylet can miss its
    hard-coded 30 s start-up window."""
    from lumos_ray import runtime

    for i in range(attempts):
        try:
            runtime.connect(num_cpus=4)
            return
        except Exception as exc:
            runtime.shutdown()
            if i == attempts - 1:
                raise
            print(f"[bench] Ray start failed ({exc}); retrying", file=sys.stderr, flush=True)
            time.sleep(5)


# ------------------------------------------------------------------------------ report
def _log(label: str, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(
            f"[bench] {label:40s} N={r['concurrency']:<4d} p50={r['p50_us'] / 1e3:8.2f} ms "
            f"p95={r['p95_us'] / 1e3:8.2f} ms thr={r['throughput']:8.1f}/s "
            f"overhead={r['overhead_us'] / 1e3:8.3f} ms",
            file=sys.stderr,
            flush=True,
        )


def _fmt_ms(us: float) -> str:
    return f"{us / 1e3:.2f}"


def _paired(a: dict[str, Any], b: dict[str, Any], n: int, own: float) -> str:
    """a's overhead / b's overhead round by round (reps were interleaved, so each
    pair saw about the same machine load): median [min-max]."""
    pairs = zip(a["per_rep"], b["per_rep"], strict=False)
    xs = [overhead_of(x, n, own) / overhead_of(y, n, own) for x, y in pairs]
    return f"{statistics.median(xs):.2f}x [{min(xs):.2f}-{max(xs):.2f}]"


def render(report: dict[str, Any]) -> str:
    """The Markdown table for RESULTS.md (one row per framework and concurrency)."""
    table = report["table"]
    lines = []
    for n in report["concurrency"]:
        lg = table.get("langgraph:memory", {}).get(n)
        bare = table.get(BARE, {}).get(n)
        lines += [
            f"**{n} concurrent run{'s' if n > 1 else ''}** "
            f"(overhead per step = {'p50 latency' if n == 1 else 'wall time / turns'} "
            "minus the fake model's and tool's own time; ratios of the medians)",
            "",
            "| framework | p50 turn (ms) | p95 turn (ms) | turns/s | overhead/step (ms) "
            "| vs LangGraph (mem) | vs bare actor |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label, by_n in table.items():
            r = by_n.get(n)
            if r is None:
                continue
            vs_lg = f"{r['overhead_us'] / lg['overhead_us']:.2f}x" if lg else "n/a"
            vs_bare = f"{r['overhead_us'] / bare['overhead_us']:.2f}x" if bare else "n/a"
            lines.append(
                f"| {label} | {_fmt_ms(r['p50_us'])} | {_fmt_ms(r['p95_us'])} "
                f"| {r['throughput']:.0f} | {_fmt_ms(r['overhead_us'])} | {vs_lg} | {vs_bare} |"
            )
        if lg and bare:
            lines.append("")
            lines.append(
                "Per-round ratios (reps were interleaved; median [min-max] over rounds): "
                + "; ".join(
                    f"{label} vs {ref}: {_paired(by_n[n], r_ref, n, report['own_us'])}"
                    for label, by_n in table.items()
                    if label.startswith("lumos") and n in by_n
                    for ref, r_ref in (("LangGraph", lg), ("bare", bare))
                )
            )
        lines.append("")
    for label, err in report["errors"].items():
        lines.append(f"- {label}: FAILED: {err}")
    if report.get("memory"):
        lines += [
            "",
            "**Memory per idle session** (one actor process, RSS after minus before "
            "the sessions were created, divided by their number)",
            "",
            "| actor | sessions | RSS before (MiB) | RSS after (MiB) | KiB/session (RSS) "
            "| KiB/session (USS) | fill time (s) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in report["memory"]:
            lines.append(
                f"| {m['label']} | {m['sessions']} | {m['rss_before_mib']:.0f} "
                f"| {m['rss_after_mib']:.0f} | {m['rss_per_session_kib']:.1f} "
                f"| {m['uss_per_session_kib']:.1f} | {m['fill_s']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setup-venv", action="store_true", help="create .venv-bench and exit")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--crewai-reps", type=int, default=3, help="CrewAI is ~100x slower")
    p.add_argument("--target-rep-s", type=float, default=0.8, help="wall time per rep")
    p.add_argument("--sessions", type=int, default=10_000, help="idle-session memory test")
    p.add_argument("--skip-external", action="store_true", help="lumos + bare actor only")
    p.add_argument("--only", default="", help="comma list of external frameworks to run")
    p.add_argument("--json-out", default="", help="also write the raw results here")
    p.add_argument("--render", default="", help="print the tables of an earlier --json-out")
    args = p.parse_args()
    if args.render:
        rep = json.loads(Path(args.render).read_text())
        rep["table"] = {k: {int(n): r for n, r in v.items()} for k, v in rep["table"].items()}
        print(render(rep))
        return
    if args.setup_venv:
        setup_venv()
        return

    t_start = time.perf_counter()
    own = own_time_us()
    report: dict[str, Any] = {
        "command": "python " + " ".join([str(Path(sys.argv[0])), *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} at start",
        "concurrency": args.concurrency,
        "reps": args.reps,
        "own_us": own,
        "table": {},
        "errors": {},
        "versions": {"python": sys.version.split()[0]},
        "memory": [],
    }

    # Baseline processes first (their imports take a while), before Ray starts.
    externals: list[External] = []
    names = [] if args.skip_external else (args.only.split(",") if args.only else EXTERNAL)
    for fw in names:
        try:
            externals.append(External(fw, args.crewai_reps if fw == "crewai" else args.reps))
        except Exception as exc:
            report["errors"][fw] = str(exc)
    for e in list(externals):
        try:
            e.ready()
            report["versions"].update(e.versions)
        except Exception as exc:
            report["errors"][e.label] = str(exc)
            externals.remove(e)
            e.close()

    # lumos_ray and the bare actor on one embedded cluster, state in a temp dir.
    home = tempfile.mkdtemp(prefix="lumos-bench-")
    os.environ["LUMOS_HOME"] = home
    os.environ.pop("LUMOS_STORE_URL", None)
    from lumos_ray import runtime

    try:
        _connect_with_retry()
        import ray

        report["versions"]["ray"] = ray.__version__

        async def go() -> None:
            contenders = [*lumos_contenders(args.reps), *externals]
            report["table"] = await interleaved(
                contenders, args.concurrency, args.reps, args.target_rep_s, own
            )
            for e in externals:
                e.close()
            if args.sessions:
                print(f"[bench] idle-session memory, {args.sessions} sessions", file=sys.stderr)
                report["memory"] = await idle_session_memory(args.sessions)

        asyncio.run(go())
    finally:
        for e in externals:
            e.close()
        runtime.shutdown()
        shutil.rmtree(home, ignore_errors=True)

    report["elapsed_s"] = time.perf_counter() - t_start
    print(render(report))
    print(f"\n(total {report['elapsed_s']:.0f} s; versions {report['versions']})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
