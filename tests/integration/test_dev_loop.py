"""`lumos dev` end to end: a subprocess runs the dev loop on a temp project (its own
`lumos up` cluster and dev gateway); the test edits files and starts runs over HTTP.

One test on purpose: the cluster and the gateway are the cost (tens of seconds), every
check after them is seconds."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

TOOLS = '''"""The project's tools and function steps."""

from lumos_ray import tool


@tool
def stamp() -> str:
    """Say which code version runs."""
    return "tool-v1"


def mark(state):
    return "fn-v1"
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
  mark: "{{ state.mark }}"
  label: one
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Dev:
    """The `lumos dev` process and its output lines (stdout and stderr together)."""

    def __init__(self, project: Path, home: Path, port: int) -> None:
        env = dict(os.environ)
        for k in ("LUMOS_RAY_ADDRESS", "RAY_ADDRESS", "LUMOS_TRACE_EXPORTER", "LUMOS_STORE_URL"):
            env.pop(k, None)
        env["LUMOS_HOME"] = str(home)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lumos_ray",
                "dev",
                str(project),
                "--no-open",
                "--port",
                str(port),
                "--num-cpus",
                "4",
                "--quiet-ms",
                "200",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The next output line matching ``pattern`` (earlier lines are kept in seen)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            m = rx.search(line)
            if m:
                return m
        tail = "\n".join(self.seen[-40:])
        raise AssertionError(f"no line matching {pattern!r} in {timeout} s; output:\n{tail}")


def _run(base: str, thread: str, timeout: float = 120) -> dict[str, Any]:
    r = httpx.post(
        f"{base}/v1/workflows/devwf/runs", json={"input": {"thread": thread}}, timeout=60
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{base}/v1/runs/{run_id}", timeout=30).json()
        if run["status"] not in ("running", "pending"):
            assert run["status"] == "succeeded", run
            return dict(run)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not end in {timeout} s")


def test_dev_reloads_tool_and_workflow_keeps_threads_and_survives_a_syntax_error(tmp_path):
    project = tmp_path / "proj"
    (project / "configs/workflows").mkdir(parents=True)
    tools = project / "tools.py"
    tools.write_text(TOOLS)
    wf_file = project / "configs/workflows/devwf.yaml"
    wf_file.write_text(WORKFLOW)
    home = tmp_path / "home"
    port = _free_port()
    dev = _Dev(project, home, port)
    try:
        dev.wait_for(r"\[dev\] loaded: code \w+, workflow devwf \w+", 300)
        base = dev.wait_for(r"\[dev\] gateway (http://127\.0\.0\.1:\d+)", 300)[1]
        dev.wait_for(r"\[dev\] watching", 30)

        first = _run(base, "t1")
        assert first["output"] == {"ask": '["tool-v1"]', "mark": "fn-v1", "label": "one"}

        # One save of each: the tool's code and the workflow's YAML.
        tools.write_text(TOOLS.replace("tool-v1", "tool-v2").replace("fn-v1", "fn-v2"))
        wf_file.write_text(WORKFLOW.replace("label: one", "label: two"))
        reloaded = dev.wait_for(r"\[dev\] reloaded: code \w+, workflow devwf (\w+)", 120)
        new_version = reloaded[1]

        second = _run(base, "t1")
        assert second["output"] == {"ask": '["tool-v2"]', "mark": "fn-v2", "label": "two"}
        assert second["version"] == new_version != first["version"]
        listed = httpx.get(f"{base}/v1/runs", timeout=30).json()["data"]
        assert {r["version"] for r in listed} == {first["version"], new_version}

        # The thread begun before the reload goes on: one history with both turns.
        from lumos_ray.store import open_store

        store = open_store(url=f"sqlite:///{home / 'runs.db'}", tenant_id="default")
        history = store.thread_messages("helper", "t1")
        assert [m["content"] for m in history if m["role"] == "tool"] == ["tool-v1", "tool-v2"]
        assert [m["content"] for m in history if m["role"] == "user"] == ["go", "go"]

        # A syntax error: file:line in the terminal and the status file; v2 serves on.
        tools.write_text(
            TOOLS.replace('return "tool-v1"', 'return "tool-v3" +').replace("fn-v1", "fn-v3")
        )
        dev.wait_for(r"\[dev\] error: tools\.py:9: SyntaxError", 60)
        status = json.loads((home / "dev-status.json").read_text())
        assert status["ok"] is False
        assert status["errors"][0]["file"] == "tools.py"
        assert status["errors"][0]["line"] == 9
        assert "SyntaxError" in status["errors"][0]["message"]
        assert status["reloaded_at"]

        third = _run(base, "t2")
        assert third["output"] == {"ask": '["tool-v2"]', "mark": "fn-v2", "label": "two"}

        dev.proc.send_signal(signal.SIGINT)
        assert dev.proc.wait(timeout=120) == 0
        # It stopped what it started: the cluster and the status file are gone.
        assert not (home / "cluster.json").exists()
        assert not (home / "dev-status.json").exists()
    finally:
        if dev.proc.poll() is None:
            os.killpg(dev.proc.pid, signal.SIGKILL)
            dev.proc.wait(timeout=30)
        if (home / "cluster.json").exists():  # leave no Ray processes behind
            from lumos_ray.runtime import cluster_down

            cluster_down(home)
