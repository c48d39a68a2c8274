"""`lumos finetune` against a cluster started with `ray start --head` in this test.

The cluster gets its own temp dir and free ports and is stopped by killing exactly the
processes that belong to it (never `ray stop`, which would stop every cluster on the
machine). The same test kills a job mid-training and shows that submitting it again
resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray.finetune import cancel_job, make_client_or_none
from lumos_ray.finetune._demo import write_color_dataset

pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _pids_of(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if marker in cmd:
            pids.append(int(d.name))
    return pids


def _kill_cluster(marker: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_of(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _pids_of(marker) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="module")
def head_address() -> Iterator[str]:
    """A `ray start --head` cluster of our own: http address of its Jobs API."""
    temp = tempfile.mkdtemp(prefix="lumos-fthead-", dir="/tmp")
    gcs, dash, client, nm, om, me, al, ag, rea = _free_ports(9)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(BIN / "ray"), "start", "--head", "--port", str(gcs),
        "--node-ip-address", "127.0.0.1", "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
        "--ray-client-server-port", str(client), "--node-manager-port", str(nm),
        "--object-manager-port", str(om), "--metrics-export-port", str(me),
        "--dashboard-agent-listen-port", str(al), "--dashboard-agent-grpc-port", str(ag),
        "--runtime-env-agent-port", str(rea), "--temp-dir", temp, "--num-cpus", "4",
        "--disable-usage-stats",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, env=env, timeout=240, capture_output=True, text=True)
        assert proc.returncode == 0, f"ray start failed:\n{proc.stdout}\n{proc.stderr}"
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 180
        while make_client_or_none(address) is None:
            assert time.monotonic() < deadline, "Ray Jobs API did not come up"
            time.sleep(1)
        yield address
    finally:
        _kill_cluster(temp)


def _lumos(*args: str, timeout: float = 600) -> dict:
    proc = subprocess.run(
        [str(BIN / "lumos"), *args, "--json"], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"lumos {args}: {proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_submit_to_ray_start_head_kill_and_resume(head_address: str, tmp_path: Path) -> None:
    from lumos_ray.adapters import AdapterRegistry
    from lumos_ray.models import tiny_model_path

    data = write_color_dataset(tmp_path / "colors.jsonl", 72)
    job = tmp_path / "job.yaml"
    total = 120
    job.write_text(
        f"""
name: resume-me
base_model: {tiny_model_path()}
dataset: {{path: {data.name}}}
optimizer: {{lr: 0.003}}
training: {{max_steps: {total}, batch_size: 8, seq_len: 64, log_every_steps: 5}}
checkpoint: {{every_steps: 10, keep: 2}}
output: {{storage_dir: runs, registry_dir: registry, adapter_name: resumed}}
"""
    )
    progress = tmp_path / "runs" / "resume-me" / "progress.jsonl"

    # 1. Submit (no --wait): the client returns at once, the job runs on the cluster.
    first = _lumos("finetune", "submit", str(job), "--address", head_address)
    job1 = first["job_id"]
    assert first["status"] == "PENDING"

    # 2. Kill it once it has checkpointed.
    deadline = time.monotonic() + 400
    while not any(e["event"] == "checkpoint" for e in _events(progress)):
        assert time.monotonic() < deadline, "no checkpoint before the deadline"
        time.sleep(0.2)
    stopped = cancel_job(head_address, job1)
    assert stopped.status == "STOPPED", stopped
    before = _events(progress)
    last_ckpt = max(e["step"] for e in before if e["event"] == "checkpoint")
    last_step = max(e["step"] for e in before if e["event"] == "step")
    assert not any(e["event"] == "done" for e in before), "job finished before the kill"
    assert 10 <= last_ckpt <= last_step < total

    status = _lumos("finetune", "status", job1, "--address", head_address)
    assert status["status"] == "STOPPED" and status["name"] == "resume-me"
    assert status["progress"]["step"] >= last_ckpt

    # 3. Submit the same job again and wait: it continues from the checkpoint.
    res = _lumos("finetune", "submit", str(job), "--address", head_address, "--wait")
    assert res["status"] == "SUCCEEDED"
    m = res["metrics"]
    # Ray Train resumes from the newest checkpoint its controller had registered when
    # the job died: the one the worker saw last, or (killed mid-registration) the one
    # before it, never step 0.
    ckpts = sorted(e["step"] for e in before if e["event"] == "checkpoint")
    assert m["resumed_from_step"] in {*ckpts, last_ckpt + 10}, (m, ckpts)
    assert m["resumed_from_step"] >= ckpts[-2 if len(ckpts) > 1 else -1]
    assert m["step"] == total and m["eval_loss"] < m["base_eval_loss"]
    after = _events(progress)[len(before) :]
    start = next(e for e in after if e["event"] == "start")
    assert start["resumed_from_step"] == m["resumed_from_step"]
    first_step = next(e for e in after if e["event"] == "step")
    assert first_step["step"] == m["resumed_from_step"] + 5  # not 5: counting went on
    # The base-model loss of the first run was carried over, not re-measured on the
    # partly trained adapter.
    assert start["base_eval_loss"] == before[0]["base_eval_loss"]

    rec = AdapterRegistry(tmp_path / "registry").get("resumed")
    assert rec.metadata["metrics"]["resumed_from_step"] == m["resumed_from_step"]

    # 4. list / logs see both jobs; logs carry the progress lines.
    jobs = _lumos("finetune", "list", "--address", head_address)
    ids = {j["job_id"]: j["status"] for j in jobs}
    assert ids[job1] == "STOPPED" and ids[res["job_id"]] == "SUCCEEDED"
    logs = _lumos("finetune", "logs", res["job_id"], "--address", head_address)["logs"]
    assert "LUMOS_PROGRESS" in logs and "LUMOS_RESULT" in logs
