"""`lumos finetune` against a cluster started with `ray start --head` in this test.

The cluster is a second one beside the session's (which may be busy with other tests
on the same 2 cores), so the fixture shares nothing with it: its own temp dir, free
ports (worker ports picked by the OS, not Ray's fixed 10002-19999 range), no
RAY_ADDRESS or other session settings in its environment, and a start that is retried
from scratch when a port was taken meanwhile or Ray's 30 s raylet registration missed.
Every process of the cluster carries a marker in its environment; that is how they
are found and stopped by PID (never `ray stop`, which would stop every cluster on the
machine; worker processes rename themselves, so their command line is no marker).

The same test kills a job mid-training and shows that submitting it again resumes
from the last checkpoint the job wrote before the kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray.finetune import cancel_job, make_client_or_none, parse_progress_line
from lumos_ray.finetune._checkpoints import complete_checkpoints, verified_step
from lumos_ray.finetune._demo import write_color_dataset

# Startup, two trainings and a kill on a loaded 2-core machine: more than the default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

BIN = Path(sys.executable).parent
MARKER_VAR = "LUMOS_TEST_RAY_HEAD"
# Generous ceilings for waits on a loaded machine (each wait ends as soon as it can).
START_TIMEOUT_S = 300
JOB_TIMEOUT_S = 1200
# Processes of one training job: the job driver, Ray Train's controller and workers.
JOB_PROCESS_MARKS = ("lumos_ray.finetune._job_main", "TrainController", "RayTrainWorker")


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


def _cluster_pids(marker: str, cmd_marks: tuple[str, ...] = ()) -> list[int]:
    """PIDs whose environment has ``MARKER_VAR=marker`` (optionally: whose command line
    contains one of ``cmd_marks``)."""
    tag = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if tag not in (d / "environ").read_bytes().split(b"\0"):
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if not cmd_marks or any(m in cmd for m in cmd_marks):
            pids.append(int(d.name))
    return pids


def _wait_gone(marker: str, cmd_marks: tuple[str, ...], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _cluster_pids(marker, cmd_marks)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _kill_cluster(marker: str) -> None:
    # gcs_server and raylet often outlive SIGTERM by far (as with `ray stop`, SIGKILL
    # follows a grace period).
    for sig, grace_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 60)):
        for pid in _cluster_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not _wait_gone(marker, (), grace_s):
            return


def _child_env(**extra: str) -> dict[str, str]:
    """This process's environment without what the session's cluster put there."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "LUMOS_RAY_ADDRESS", "LUMOS_TRACE_EXPORTER") and k != MARKER_VAR
    }
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**env, **extra}


def _start_head(temp: str, marker: str) -> tuple[str | None, str]:
    """One try at `ray start --head`: (Jobs API address or None, what went wrong)."""
    gcs, dash, client, me, al, ag, rea = _free_ports(7)
    cmd = [
        str(BIN / "ray"), "start", "--head", "--port", str(gcs),
        "--node-ip-address", "127.0.0.1", "--include-dashboard", "true",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
        "--ray-client-server-port", str(client), "--metrics-export-port", str(me),
        "--dashboard-agent-listen-port", str(al), "--dashboard-agent-grpc-port", str(ag),
        "--runtime-env-agent-port", str(rea), "--min-worker-port", "0",
        "--max-worker-port", "0", "--temp-dir", temp, "--num-cpus", "4",
        "--disable-usage-stats",
    ]  # fmt: skip
    env = _child_env(**{MARKER_VAR: marker})
    try:
        proc = subprocess.run(cmd, env=env, timeout=START_TIMEOUT_S, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return None, f"ray start still running after {START_TIMEOUT_S} s"
    if proc.returncode != 0:
        return None, f"ray start failed:\n{proc.stdout}\n{proc.stderr}"
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while make_client_or_none(address) is None:
        if time.monotonic() > deadline:
            return None, f"Ray Jobs API did not come up at {address}"
        time.sleep(1)
    return address, ""


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[str, str]]:
    """A `ray start --head` cluster of our own: (Jobs API address, process marker)."""
    errors = []
    for _attempt in range(3):
        temp = tempfile.mkdtemp(prefix="lumos-fthead-", dir="/tmp")
        marker = os.path.basename(temp)
        address, error = _start_head(temp, marker)
        if address is None:
            _kill_cluster(marker)
            shutil.rmtree(temp, ignore_errors=True)
            errors.append(error)
            continue
        try:
            yield address, marker
        finally:
            _kill_cluster(marker)
            shutil.rmtree(temp, ignore_errors=True)
        return
    pytest.fail("could not start a `ray start --head` cluster:\n" + "\n---\n".join(errors))


def _lumos(*args: str, home: Path) -> dict:
    proc = subprocess.run(
        [str(BIN / "lumos"), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
        env=_child_env(LUMOS_HOME=str(home)),
    )
    assert proc.returncode == 0, f"lumos {args}: {proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _checkpoints_on_disk(run_dir: Path) -> dict[str, int]:
    """Finished checkpoints (the final rename happened) -> step; temp dirs left out."""
    return {
        d.name: int(d.name[len("lumos-ckpt-step") :].split("-")[0])
        for d in run_dir.glob("lumos-ckpt-step*")
        if d.is_dir()
    }


def test_submit_to_ray_start_head_kill_and_resume(
    head: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lumos_ray.adapters import AdapterRegistry
    from lumos_ray.models import tiny_model_path

    head_address, marker = head
    home = tmp_path / "home"
    data = write_color_dataset(tmp_path / "colors.jsonl", 72)
    job = tmp_path / "job.yaml"
    total, every = 120, 10
    job.write_text(
        f"""
name: resume-me
base_model: {tiny_model_path()}
dataset: {{path: {data.name}}}
optimizer: {{lr: 0.003}}
training: {{max_steps: {total}, batch_size: 8, seq_len: 64, log_every_steps: 5}}
checkpoint: {{every_steps: {every}, keep: 2}}
output: {{storage_dir: runs, registry_dir: registry, adapter_name: resumed}}
"""
    )
    run_dir = tmp_path / "runs" / "resume-me"
    progress = run_dir / "progress.jsonl"

    # 1. Submit (no --wait): the client returns at once, the job runs on the cluster.
    first = _lumos("finetune", "submit", str(job), "--address", head_address, home=home)
    job1 = first["job_id"]
    assert first["status"] == "PENDING"

    # 2. Kill it as soon as it has checkpointed: Ray Train's controller registers a
    # checkpoint up to a poll interval (2 s) after the worker reported it, so this kill
    # often comes before Ray knew of the checkpoint the worker had just written.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not any(e["event"] == "checkpoint" for e in _events(progress)):
        assert time.monotonic() < deadline, "no checkpoint before the deadline"
        time.sleep(0.2)
    stopped = cancel_job(head_address, job1, wait_s=300)
    assert stopped.status == "STOPPED", stopped
    # STOPPED means the driver is dead; its Ray Train workers die after it. Until they
    # have, they may still write a checkpoint or a progress line.
    left = _wait_gone(marker, JOB_PROCESS_MARKS, 300)
    assert not left, f"processes of the stopped job still alive: {left}"

    before = _events(progress)
    ckpt_events = [e for e in before if e["event"] == "checkpoint"]
    last_ckpt = max(e["step"] for e in ckpt_events)
    last_step = max(e["step"] for e in before if e["event"] == "step")
    assert not any(e["event"] == "done" for e in before), "job finished before the kill"
    assert every <= last_ckpt <= last_step < total
    on_disk = _checkpoints_on_disk(run_dir)
    newest = max(on_disk, key=lambda n: on_disk[n])
    # Every checkpoint the progress log announced is complete on disk (`keep: 2` may
    # have pruned older ones), and at most one more was finished after the last
    # announcement (the kill came between its rename and the progress line).
    assert ckpt_events[-1]["checkpoint"] in on_disk, (ckpt_events, on_disk)
    assert on_disk[newest] in {last_ckpt, last_ckpt + every}, (on_disk, last_ckpt)
    assert verified_step(run_dir / newest) == on_disk[newest]
    # For the failure message: what Ray's controller had registered when the job died.
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    ray_latest = (
        (json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}).get(
            "checkpoint_dir_name"
        )
        if snapshot.exists()
        else None
    )

    # `status` shows the newest progress the job's log carries. The driver copies
    # progress lines into its log every 0.5 s and the kill may beat the last copy, so
    # compare with the log itself, not with the progress file.
    status = _lumos("finetune", "status", job1, "--address", head_address, home=home)
    assert status["status"] == "STOPPED" and status["name"] == "resume-me"
    log1 = _lumos("finetune", "logs", job1, "--address", head_address, home=home)["logs"]
    logged = [parse_progress_line(x) for x in log1.splitlines()]
    logged_steps = [e["step"] for e in logged if e and e["event"] in ("start", "step")]
    assert logged_steps, log1[-3000:]
    assert status["progress"]["step"] == logged_steps[-1] <= last_step

    # 3. Submit the same job again and wait: it continues from the last checkpoint
    # written before the kill, whether Ray's controller had registered it or not.
    res = _lumos("finetune", "submit", str(job), "--address", head_address, "--wait", home=home)
    assert res["status"] == "SUCCEEDED"
    m = res["metrics"]
    why = f"on disk {on_disk}, Ray's latest at the kill {ray_latest}, metrics {m}"
    assert m["resumed_from_step"] == on_disk[newest], why
    assert m["step"] == total and m["eval_loss"] < m["base_eval_loss"]
    after = _events(progress)[len(before) :]
    start = next(e for e in after if e["event"] == "start")
    assert start["resumed_from_step"] == on_disk[newest]
    assert start["resumed_from_checkpoint"] == newest, why
    first_step = next(e for e in after if e["event"] == "step")
    assert first_step["step"] == on_disk[newest] + 5  # not 5: counting went on
    # The base-model loss of the first run was carried over, not re-measured on the
    # partly trained adapter.
    assert start["base_eval_loss"] == before[0]["base_eval_loss"]
    # Ray now knows the checkpoint it had missed (the resumed run reported it), so
    # `keep: 2` prunes it like any other: only the last two are left.
    assert len(complete_checkpoints(run_dir)) == 2, _checkpoints_on_disk(run_dir)
    assert not list(run_dir.glob(".lumos-ckpt-tmp-*"))

    # Published in the job's tenant's namespace: list() is the operator's view of all.
    (rec,) = [r for r in AdapterRegistry(tmp_path / "registry").list() if r.name == "resumed"]
    assert rec.metadata["metrics"]["resumed_from_step"] == m["resumed_from_step"]

    # 4. list / logs see both jobs; logs carry the progress lines (for people); the
    # result came through the launcher's result channel, not from the log.
    jobs = _lumos("finetune", "list", "--address", head_address, home=home)
    ids = {j["job_id"]: j["status"] for j in jobs}
    assert ids[job1] == "STOPPED" and ids[res["job_id"]] == "SUCCEEDED"
    logs = _lumos("finetune", "logs", res["job_id"], "--address", head_address, home=home)
    assert "LUMOS_PROGRESS" in logs["logs"] and "LUMOS_RESULT" not in logs["logs"]
    shown = _lumos("finetune", "status", res["job_id"], "--address", head_address, home=home)
    assert shown["result"]["metrics"]["step"] == total, shown

    # 5. The dashboard lists the same jobs through this live Jobs API, as its key's
    # tenant (the jobs were submitted as `default`): both listed, the finished one with
    # its loss curve from the progress lines; another tenant's key sees neither.
    _dashboard_sees_the_jobs(head_address, home, monkeypatch, job1, res["job_id"], total)


def _dashboard_sees_the_jobs(
    address: str, home: Path, monkeypatch: pytest.MonkeyPatch, stopped: str, done: str, steps: int
) -> None:
    from fastapi.testclient import TestClient

    from lumos_ray.serve import GatewayConfig, ServeConfig
    from lumos_ray.serve._config import ApiKeySpec
    from lumos_ray.serve._gateway import _GATEWAY, Gateway, build_app

    monkeypatch.setenv("LUMOS_JOBS_ADDRESS", address)
    monkeypatch.setenv("LUMOS_HOME", str(home))
    keys = {"sk-jobs-default": "default", "sk-jobs-other": "other"}
    cfg = ServeConfig(
        gateway=GatewayConfig(
            api_keys=[ApiKeySpec(key=k, tenant=t, role="viewer") for k, t in keys.items()],
            api_keys_env=None,
        ),
        adapters_dir=str(home / "adapters"),
    )
    Gateway(cfg.model_dump_json(), llm_handles={})
    try:
        for key, tenant in keys.items():
            with TestClient(build_app(), follow_redirects=False) as c:
                r = c.post(
                    "/ui/login",
                    data={"key": key, "next": "/ui/jobs"},
                    headers={"Origin": "http://testserver"},
                )
                assert r.status_code == 303, r.text
                listed = c.get("/ui/jobs")
                assert listed.status_code == 200, listed.text
                page = c.get(f"/ui/jobs/{done}")
                if tenant == "other":
                    assert stopped not in listed.text and done not in listed.text
                    assert page.status_code == 404
                    continue
                assert stopped in listed.text and done in listed.text
                assert page.status_code == 200 and "SUCCEEDED" in page.text
                data = page.text.split('id="loss-data">', 1)[1].split("</script>", 1)[0]
                chart = json.loads(data)
                assert chart["steps"][-1] == steps and len(chart["series"]["loss"]) == len(
                    chart["steps"]
                )
    finally:
        _GATEWAY.clear()
