"""The `lumos` CLI end to end, in subprocesses (each starts its own embedded cluster),
and `lumos submit` to a cluster started with `ray start --head` by the test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lumos_ray import runtime

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def lumos(*args: str, cwd: Path, env: dict[str, str], timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "lumos_ray", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["LUMOS_HOME"] = str(tmp / ".lumos")
    for k in ("LUMOS_RAY_ADDRESS", "RAY_ADDRESS", "LUMOS_TRACE_EXPORTER"):
        env.pop(k, None)
    return env


def _json(text: str, key: str | None = None):
    """The JSON object in `text` (logs may carry other lines around it)."""
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj, _ = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        if key is None or (isinstance(obj, dict) and key in obj):
            return obj
    raise AssertionError(f"no JSON object{f' with {key!r}' if key else ''} in: {text[-3000:]}")


def test_init_run_suspend_resume_and_inspect(tmp_path):
    env = _env(tmp_path)
    r = lumos("init", "proj", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    proj = tmp_path / "proj"
    assert (proj / "configs/workflows/hello.yaml").is_file()

    r = lumos(
        "run",
        "configs/workflows/hello.yaml",
        "--input",
        '{"topic": "ray"}',
        "--json",
        cwd=proj,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = _json(r.stdout)["run"]
    assert run["status"] == "suspended"
    assert "Publish the summary about ray" in run["suspended"]["prompt"]

    bad = lumos("runs", "resume", run["id"], "--input", '{"approved": "maybe"}', cwd=proj, env=env)
    assert bad.returncode == 1
    assert "LUMOS-E012" in bad.stderr and "How to fix" in bad.stderr
    assert "Traceback" not in bad.stderr

    r = lumos(
        "runs", "resume", run["id"], "--input", '{"approved": true}', "--json", cwd=proj, env=env
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    done = _json(r.stdout)["run"]
    assert done["status"] == "succeeded"
    assert done["output"]["total"] == 42
    assert done["output"]["summary"].startswith("facts:")

    r = lumos("runs", "list", "--json", cwd=proj, env=env)
    rows = json.loads(r.stdout[r.stdout.index("[") :])
    assert [x["id"] for x in rows] == [run["id"]]
    r = lumos("runs", "show", run["id"], "--json", cwd=proj, env=env)
    shown = _json(r.stdout)
    assert shown["status"] == "succeeded"
    assert [e["type"] for e in shown["events"]].count("run_suspended") == 1


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    env = _env(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - id: a\n    tool: calculator\n    timeout_s: -1\n")
    r = lumos("run", str(bad), cwd=tmp_path, env=env)
    assert r.returncode == 1
    assert f"{bad}:5:" in r.stderr and "timeout_s" in r.stderr
    assert "Traceback" not in r.stderr
    r = lumos("run", str(bad), "--json", cwd=tmp_path, env=env)
    assert json.loads(r.stdout)["error"]["code"] == "LUMOS-E010"
    r = lumos(
        "run",
        str(REPO / "configs/workflows/approval.yaml"),
        "--input",
        "{oops",
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 1 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_cluster(tmp_path_factory):
    """A separate Ray cluster started with `ray start --head`, stopped by PID."""
    temp = Path(f"/tmp/lrh-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    gcs, dash = _free_port(), _free_port()
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("RAY_ADDRESS", None)
    env[runtime.LOOPBACK_ENV] = "0"  # keep the test cluster on 127.0.0.1 (see runtime)
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={gcs}",
        f"--dashboard-port={dash}",
        "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        f"--temp-dir={temp}",
        "--include-dashboard=true",
        "--disable-usage-stats",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr

    def ours() -> list[psutil.Process]:
        procs = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(temp) in a for a in p.info["cmdline"] or []):
                    procs.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return procs

    started = ours()
    assert started, "no processes of the head cluster found"
    yield {"jobs": f"http://127.0.0.1:{dash}", "env": env}
    for p in ours():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(started, timeout=30)
    shutil.rmtree(temp, ignore_errors=True)


def test_submit_runs_the_workflow_on_a_remote_cluster(tmp_path, head_cluster):
    wf_dir = tmp_path / "remote"
    wf_dir.mkdir()
    shutil.copy(REPO / "configs/workflows/research.yaml", wf_dir / "research.yaml")
    env = {**head_cluster["env"], "LUMOS_CLUSTER_HOME": str(tmp_path / "cluster-home")}
    deadline = time.time() + 60
    while True:  # the dashboard's job API needs a moment after `ray start`
        r = lumos(
            "submit",
            str(wf_dir / "research.yaml"),
            "--address",
            head_cluster["jobs"],
            "--input",
            '{"topic": "ray", "numbers": [1, 2, 3]}',
            "--wait",
            "--json",
            cwd=tmp_path,
            env=env,
            timeout=400,
        )
        if r.returncode == 0 or time.time() > deadline or "LUMOS-E002" not in r.stdout:
            break
        time.sleep(3)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    res = _json(r.stdout, "job_id")
    assert res["status"] == "SUCCEEDED", res.get("logs")
    run = _json(res["logs"], "run")["run"]
    assert run["status"] == "succeeded"
    assert run["output"]["squares"] == [1, 4, 9]
    assert run["output"]["loops"] == 3
    # It really ran on that cluster: its run store lives where the job put it.
    assert (tmp_path / "cluster-home" / "runs.db").is_file()
    st = lumos(
        "jobs",
        "status",
        res["job_id"],
        "--address",
        head_cluster["jobs"],
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert _json(st.stdout)["status"].endswith("SUCCEEDED")
