"""The one job launcher (``lumos_ray.runtime.JobLauncher``) against a real Ray Jobs API.

One `ray start --head` cluster of this module's own (loopback, free ports, stopped by
PID: never `ray stop`, which would stop every cluster on the machine). Jobs here are
tiny functions from this file's helper module, so the test is about the launcher:
structured results and errors (no log scraping), stop, bad input, and the trace
carried into the job.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from lumos_ray import runtime, tracing
from lumos_ray.errors import ConnectionFailedError, DatasetError, JobError, NotFoundError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BIN = Path(sys.executable).parent

JOB_FUNCS = textwrap.dedent(
    '''
    """Job functions for test_runtime_jobs (imported by the job's driver)."""
    import time

    from lumos_ray import tracing
    from lumos_ray.errors import DatasetError


    def add(a: int, b: int) -> dict:
        with tracing.span("test.inside_job"):
            return {"sum": a + b, "note": "LUMOS_RESULT is not how this travels"}


    def bad_data(path: str) -> None:
        raise DatasetError(f"{path}:3: not JSON", fix="Fix line 3.")


    def sleep_long(seconds: float) -> str:
        time.sleep(seconds)
        return "woke"
    '''
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    temp = Path(tempfile.mkdtemp(prefix="lrj-", dir="/tmp"))
    work = tmp_path_factory.mktemp("jobs-work")
    (work / "lumos_test_jobfuncs.py").write_text(JOB_FUNCS)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LUMOS_RAY_ADDRESS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env[runtime.LOOPBACK_ENV] = "0"  # keep the test cluster on 127.0.0.1
    # Job drivers import the helper module from here (the cluster's environment).
    env["PYTHONPATH"] = os.pathsep.join([str(work), env.get("PYTHONPATH", "")])
    dash = _free_port()
    cmd = [
        str(BIN / "ray"), "start", "--head", f"--port={_free_port()}",
        f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}",
        "--include-dashboard=true", "--disable-usage-stats",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
    ]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                runtime.JobLauncher(address, connect_timeout_s=10)
                break
            except ConnectionFailedError:
                assert time.monotonic() < deadline, f"no Jobs API at {address}"
                time.sleep(1)
        yield {"address": address, "work": work}
    finally:
        procs = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(temp) in a for a in p.info["cmdline"] or []):
                    procs.append(p)
                    p.terminate()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            p.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _launcher(head: dict, tmp_path: Path) -> runtime.JobLauncher:
    return runtime.JobLauncher(
        head["address"], results=runtime.FileResultStore(tmp_path / "results")
    )


def test_result_and_error_come_back_structured_and_the_trace_continues(
    head: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = tmp_path / "spans"
    monkeypatch.setenv("LUMOS_TRACE_EXPORTER", f"jsonl:{spans}")
    launcher = _launcher(head, tmp_path)
    lines: list[str] = []
    # A submitter's trace context, independent of how this process set up tracing.
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = SpanContext(int(trace_id, 16), 0x00F067AA0BA902B7, True, TraceFlags(1))
    token = otel_context.attach(set_span_in_context(NonRecordingSpan(parent)))
    try:
        assert tracing.inject()["traceparent"].split("-")[1] == trace_id
        job = launcher.submit("lumos_test_jobfuncs:add", {"a": 2, "b": 3}, kind="test", name="add")
    finally:
        otel_context.detach(token)
    info = launcher.follow(job, on_line=lines.append, poll_s=0.5, timeout_s=300)
    assert info.status == "SUCCEEDED" and info.kind == "test" and info.name == "add"
    assert info.result == {"sum": 5, "note": "LUMOS_RESULT is not how this travels"}
    # The job's spans joined the submitter's trace (its exporter came with LUMOS_*).
    job_spans = [
        json.loads(x) for f in spans.glob("*.jsonl") for x in f.read_text().splitlines() if x
    ]
    by_name = {s["name"]: s for s in job_spans}
    assert {"job.run", "test.inside_job"} <= set(by_name), sorted(by_name)
    assert by_name["job.run"]["trace_id"] == trace_id
    assert by_name["job.run"]["parent_id"] == "00f067aa0ba902b7"
    assert by_name["test.inside_job"]["parent_id"] == by_name["job.run"]["span_id"]

    bad = launcher.submit(
        "lumos_test_jobfuncs:bad_data", {"path": "d.jsonl"}, kind="test", name="b"
    )
    with pytest.raises(DatasetError) as ei:
        launcher.follow(bad, poll_s=0.5, timeout_s=300)
    assert "d.jsonl:3" in ei.value.message and ei.value.fix == "Fix line 3."
    assert launcher.info(bad).error["code"] == "LUMOS-E050"
    assert {j.job_id for j in launcher.list_jobs()} >= {job, bad}
    # Another tenant's launcher on the same cluster neither sees nor reads these jobs.
    other = runtime.JobLauncher(
        head["address"], results=runtime.FileResultStore(tmp_path / "results"), tenant="other-t"
    )
    assert not {j.job_id for j in other.list_jobs()} & {job, bad}
    for call in (other.info, other.logs, other.stop):
        with pytest.raises(NotFoundError):
            call(job)


def test_stop_unknown_ids_and_bounded_waits(head: dict, tmp_path: Path) -> None:
    launcher = _launcher(head, tmp_path)
    job = launcher.submit("lumos_test_jobfuncs:sleep_long", {"seconds": 600}, kind="test", name="s")
    with pytest.raises(JobError) as ei:
        launcher.follow(job, poll_s=0.5, timeout_s=3)
    assert "lumos jobs stop" in ei.value.fix
    stopped = launcher.stop(job, wait_s=120)
    assert stopped.status == "STOPPED" and stopped.result is None
    with pytest.raises(NotFoundError) as nf:
        launcher.info("lumos-test-no-such-job")
    assert "lumos jobs list" in nf.value.fix
    # The CLI says the same, without a traceback.
    proc = subprocess.run(
        [str(BIN / "lumos"), "jobs", "stop", "lumos-test-no-such-job", "--address",
         head["address"], "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "LUMOS-E003"


def test_bad_addresses_fail_fast_with_the_fix() -> None:
    with pytest.raises(ConnectionFailedError) as ei:
        runtime.JobLauncher("ray://127.0.0.1:10001")
    assert "8265" in ei.value.fix
    with pytest.raises(ConnectionFailedError):
        runtime.JobLauncher(None)

    with pytest.raises(ConnectionFailedError) as ei:
        runtime.JobLauncher(f"http://127.0.0.1:{_free_port()}", connect_timeout_s=20)
    assert "ray start --head" in ei.value.fix
