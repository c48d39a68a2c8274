"""Save-to-new-code latency: `lumos dev` hot reload vs a full restart, in one run.

For a tool edit (Python) and a workflow edit (YAML) on a temp project, the time from
the file's save to the end of the first run whose output shows the new code:

- **lumos dev**: the dev loop runs; after the save, runs are started over HTTP, one
  after the other, until one returns the new output (the time includes that run).
- **full restart**: what one does without it: `lumos down`, `lumos up`, then
  `lumos run configs/workflows/devwf.yaml` (which registers the new version and runs
  it); the time is the three commands end to end.

    .venv/bin/python benchmarks/dev_reload.py [--rounds 3]

Prints a table and one JSON line (`{"dev": ..., "restart": ..., "loadavg": ...}`).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

TOOLS = '''from lumos_ray import tool


@tool
def stamp() -> str:
    """Say which code version runs."""
    return "tool-0"


def mark(state):
    return "fn"
'''

WORKFLOW = """name: devwf
agents:
  - name: helper
    instructions: Use your tools.
    model: test
    tools: ["tools:stamp"]
steps:
  - id: ask
    agent: helper
    input: go
    thread: "{{ input.thread }}"
  - id: mark
    function: tools:mark
output:
  ask: "{{ state.ask }}"
  label: label-0
"""


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("LUMOS_RAY_ADDRESS", "RAY_ADDRESS", "LUMOS_TRACE_EXPORTER", "LUMOS_STORE_URL"):
        env.pop(k, None)
    env["LUMOS_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _project(root: Path) -> tuple[Path, Path, Path]:
    project = root / "proj"
    (project / "configs/workflows").mkdir(parents=True)
    tools, wf = project / "tools.py", project / "configs/workflows/devwf.yaml"
    tools.write_text(TOOLS)
    wf.write_text(WORKFLOW)
    return project, tools, wf


def _http_run(base: str) -> dict[str, Any]:
    r = httpx.post(f"{base}/v1/workflows/devwf/runs", json={"input": {"thread": "t"}}, timeout=60)
    r.raise_for_status()
    run_id = r.json()["id"]
    while True:
        run = httpx.get(f"{base}/v1/runs/{run_id}", timeout=60).json()
        if run["status"] not in ("running", "pending"):
            return dict(run)
        time.sleep(0.05)


def _dev_rounds(root: Path, rounds: int) -> dict[str, list[float]]:
    project, tools, wf = _project(root / "dev")
    home = root / "dev" / "home"
    lines: queue.Queue[dict[str, Any]] = queue.Queue()
    log = (root / "dev-stderr.log").open("w")
    other: list[str] = []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lumos_ray",
            "dev",
            str(project),
            "--no-open",
            "--json",
            "--port",
            str(_free_port()),
            "--quiet-ms",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(home),
        start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                lines.put(json.loads(line))
            except ValueError:  # an error report (indented JSON) or other output
                other.append(line)
        lines.put({"event": "exited"})

    threading.Thread(target=pump, daemon=True).start()
    base = ""
    while not base:
        ev = lines.get(timeout=600)
        if ev["event"] == "exited":
            tail = ("".join(other) + (root / "dev-stderr.log").read_text())[-3000:]
            raise SystemExit(f"lumos dev exited ({proc.wait()}): {tail}")
        base = ev.get("gateway", "") if ev["event"] == "ready" else ""
    out: dict[str, list[float]] = {"tool": [], "workflow": [], "tool_reload": []}
    try:
        _http_run(base)  # warm: agent actor, task worker
        for i in range(1, rounds + 1):
            for kind in ("tool", "workflow"):
                while not lines.empty():
                    lines.get()
                t0 = time.perf_counter()
                if kind == "tool":
                    tools.write_text(TOOLS.replace("tool-0", f"tool-{i}"))
                    want = ("ask", f'["tool-{i}"]')
                else:
                    wf.write_text(WORKFLOW.replace("label-0", f"label-{i}"))
                    want = ("label", f"label-{i}")
                while True:
                    run = _http_run(base)
                    if (run.get("output") or {}).get(want[0]) == want[1]:
                        break
                out[kind].append(time.perf_counter() - t0)
                if kind == "tool":
                    while True:  # the reload's own time, as the dev loop measured it
                        ev = lines.get(timeout=120)
                        if ev["event"] == "reload" and ev.get("code_reloaded"):
                            out["tool_reload"].append(ev["seconds"])
                            break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
    return out


def _lumos(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lumos_ray", *args],
        cwd=cwd,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )


def _up(project: Path, home: Path, out: dict[str, list[float]]) -> None:
    """`lumos up`; a start that Ray aborts on a loaded machine is retried (and counted:
    it is part of what a restart costs there)."""
    for attempt in range(3):
        try:
            _lumos(["up", "--no-dashboard"], project, home)
            return
        except subprocess.CalledProcessError:
            out["failed_ups"].append(float(attempt + 1))
            if attempt == 2:
                raise


def _restart_rounds(root: Path, rounds: int) -> dict[str, list[float]]:
    project, tools, wf = _project(root / "restart")
    home = project / ".lumos"
    out: dict[str, list[float]] = {"tool": [], "workflow": [], "failed_ups": []}
    _up(project, home, out)
    try:
        for i in range(1, rounds + 1):
            for kind in ("tool", "workflow"):
                t0 = time.perf_counter()
                if kind == "tool":
                    tools.write_text(TOOLS.replace("tool-0", f"tool-{i}"))
                    want = ("ask", f'["tool-{i}"]')
                else:
                    wf.write_text(WORKFLOW.replace("label-0", f"label-{i}"))
                    want = ("label", f"label-{i}")
                _lumos(["down"], project, home)
                _up(project, home, out)
                r = _lumos(
                    ["run", "configs/workflows/devwf.yaml", "--input", '{"thread": "t"}', "--json"],
                    project,
                    home,
                )
                run = json.loads(r.stdout)["run"]
                assert run["output"][want[0]] == want[1], run
                out[kind].append(time.perf_counter() - t0)
    finally:
        _lumos(["down"], project, home)
    return out


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"median {statistics.median(xs):6.2f} s  (min {min(xs):.2f}, max {max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="lumos-devbench-") as tmp:
        root = Path(tmp)
        for attempt in (1, 2):  # Ray may abort a cluster start on a loaded machine
            try:
                dev = _dev_rounds(root / f"try{attempt}", args.rounds)
                break
            except SystemExit as exc:
                print(f"dev attempt {attempt} failed: {exc}", file=sys.stderr)
                if attempt == 2:
                    raise
        restart = _restart_rounds(root, args.rounds)
    load_after = _loadavg()
    print(f"save -> first run with the new code ({args.rounds} rounds each)")
    print(f"  tool edit      lumos dev     {_fmt(dev['tool'])}")
    print(f"                 (reload alone {_fmt(dev['tool_reload'])})")
    print(f"                 full restart  {_fmt(restart['tool'])}")
    print(f"  workflow edit  lumos dev     {_fmt(dev['workflow'])}")
    print(f"                 full restart  {_fmt(restart['workflow'])}")
    print(f"loadavg before: {load_before}; after: {load_after}")
    print(json.dumps({"dev": dev, "restart": restart, "loadavg": [load_before, load_after]}))


if __name__ == "__main__":
    main()
