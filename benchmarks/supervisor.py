"""Supervisor with two sub-agents: lumos_ray's SupervisorStep vs LangGraph's supervisor
pattern, side by side in one run.

    .venv/bin/python benchmarks/agent_overhead.py --setup-venv   # once: .venv-bench
    .venv/bin/python benchmarks/supervisor.py

What one *run* is, for every contender (``_bench_frameworks/supervisor_agents.py``):
the supervisor asks ``researcher`` (which calls ``add`` and answers), then ``writer``
(which calls ``multiply`` and answers), then answers ``"3"``: 7 model calls, 2 tool
calls, 2 sub-agent invocations, on fresh threads, answer checked. The models are
scripted and instant, so the figures are the frameworks' own cost.

* **durable supervisor step**: ``lumos_ray.execute_run`` of a workflow whose one step
  is a ``SupervisorStep`` (``_bench_frameworks/supervisor_lumos.py``): the runner
  actor runs the supervisor's turn in its actor; each sub-agent runs in its own actor
  (asked as a tool); the turn is checkpointed and every agent's thread persisted in
  the run store (SQLite).
* **supervisor agent via handle**: the same supervisor as an ``Agent`` whose tools
  are the two sub-agent specs, called through its handle: no workflow, no checkpoint
  (threads still persisted).
* **LangGraph**: two ``create_react_agent`` sub-agents wrapped as tools of a
  supervisor ``create_react_agent`` with an ``AsyncSqliteSaver``
  (``_bench_frameworks/supervisor_langgraph.py``, in ``.venv-bench``), one process.

Concurrency 1 and 100 (100 asyncio workers in a closed loop); reps of the contenders
interleaved round by round, medians over rounds, ratios per round (median [min-max]).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FRAMEWORKS_DIR = HERE / "_bench_frameworks"
sys.path.insert(0, str(FRAMEWORKS_DIR))  # before Ray starts: workers inherit sys.path
sys.path.insert(0, str(HERE))

from agent_overhead import BENCH_VENV, External, _connect_with_retry  # noqa: E402
from durable_path import Local, _ratio, interleaved  # noqa: E402
from supervisor_agents import ANSWER, PROMPT  # noqa: E402

DURABLE = "lumos_ray durable SupervisorStep (execute_run)"
DIRECT = "lumos_ray supervisor agent via handle (no workflow)"
LANGGRAPH = "LangGraph react supervisor + 2 react sub-agents as tools + AsyncSqliteSaver"


class LangGraphSupervisor(External):
    """``supervisor_langgraph.py`` in ``.venv-bench``, driven over a pipe rep by rep."""

    def __init__(self, reps: int) -> None:
        self.label, self.reps = LANGGRAPH, reps
        py = BENCH_VENV / "bin" / "python"
        if not py.exists():
            raise RuntimeError(f"{py} missing: run agent_overhead.py --setup-venv first")
        self.proc = subprocess.Popen(
            [str(py), str(FRAMEWORKS_DIR / "supervisor_langgraph.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        self.versions: dict[str, str] = {}


def lumos_contenders(reps: int) -> list[Local]:
    from supervisor_lumos import make_direct, make_workflow

    import lumos_ray

    wf = make_workflow()
    handle = make_direct().deploy()

    async def durable(_tid: str) -> Any:
        info = await lumos_ray.execute_run(wf, PROMPT, timeout=300)
        if info.status != "succeeded":
            raise RuntimeError(f"run {info.id} ended {info.status}: {info.error}")
        return info.output

    async def direct(tid: str) -> Any:
        return (await handle.run(PROMPT, thread_id=tid)).output

    return [Local(DURABLE, durable, reps), Local(DIRECT, direct, reps)]


def render(report: dict[str, Any]) -> str:
    table = report["table"]
    lines = [
        f"`{report['command']}` ({report['when']}; {report['machine']}; "
        f"{report['reps']} interleaved rounds, medians)",
        "",
        "| contender | concurrent | p50 run (ms) | p95 run (ms) | runs/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for n in report["concurrency"]:
        for label, by_n in table.items():
            r = by_n.get(n)
            if r is not None:
                lines.append(
                    f"| {label} | {n} | {r['p50_us'] / 1e3:.1f} | {r['p95_us'] / 1e3:.1f} "
                    f"| {r['throughput']:.1f} |"
                )
    lines.append("")
    dur, dct, lg = table.get(DURABLE, {}), table.get(DIRECT, {}), table.get(LANGGRAPH, {})
    for n in report["concurrency"]:
        if n in dur and n in lg:
            lines.append(
                f"- runs/s, durable SupervisorStep / LangGraph at {n} concurrent: "
                + _ratio(dur[n], lg[n], "throughput")
            )
        if n in dct and n in lg:
            lines.append(
                f"- runs/s, supervisor via handle / LangGraph at {n} concurrent: "
                + _ratio(dct[n], lg[n], "throughput")
            )
    lines += [f"- {label}: FAILED: {err}" for label, err in report["errors"].items()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    p.add_argument("--reps", type=int, default=3, help="interleaved rounds")
    p.add_argument("--target-rep-s", type=float, default=1.0, help="wall time per rep")
    p.add_argument("--skip-langgraph", action="store_true")
    p.add_argument("--json-out", default="", help="also write the raw results here")
    p.add_argument(
        "--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md"
    )
    args = p.parse_args()
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "command": "python " + " ".join(["benchmarks/supervisor.py", *sys.argv[1:]]),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} at start",
        "concurrency": args.concurrency,
        "reps": args.reps,
        "table": {},
        "errors": {},
        "versions": {"python": sys.version.split()[0]},
    }
    externals: list[Any] = []
    if not args.skip_langgraph:
        try:
            lg = LangGraphSupervisor(args.reps)
            lg.ready()
            report["versions"].update(lg.versions)
            externals.append(lg)
        except Exception as exc:
            report["errors"][LANGGRAPH] = str(exc)

    home = tempfile.mkdtemp(prefix="lumos-supervisor-bench-")
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
                contenders, args.concurrency, args.reps, args.target_rep_s
            )

        asyncio.run(go())
    finally:
        for e in externals:
            e.close()
        runtime.shutdown()
        shutil.rmtree(home, ignore_errors=True)

    report["load_end"] = "/".join(f"{x:.1f}" for x in os.getloadavg())
    report["machine"] += f", {report['load_end']} at end"
    report["elapsed_s"] = time.perf_counter() - t_start
    text = render(report)
    print(text)
    print(f"\n(total {report['elapsed_s']:.0f} s; versions {report['versions']})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))
    if args.append_results:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n" + text + "\n")


assert ANSWER == "3"  # the harness checks every answer against its EXPECTED ("3")

if __name__ == "__main__":
    main()
