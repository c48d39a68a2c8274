"""Tools on the real session Ray cluster: resource-bearing tools run as Ray tasks."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import ray

from lumos_ray import tracing
from lumos_ray.errors import ToolArgumentError, ToolError
from lumos_ray.tools._api import Tool, ToolContext, get_tool, tool


async def test_tool_with_num_cpus_runs_as_a_ray_task_in_another_process(ray_cluster):
    @tool(num_cpus=1)
    def where(tag: str, ctx: ToolContext | None = None) -> dict:
        """Report the process and Ray task that ran me."""
        return {
            "pid": os.getpid(),
            "task_id": ray.get_runtime_context().get_task_id(),
            "tag": tag,
            "run_id": ctx.run_id if ctx else None,
        }

    assert where.uses_ray
    with tracing.span("test.tools.parent") as parent:
        out = await where.acall({"tag": "x"}, ToolContext(run_id="r-42"))
    assert out["pid"] != os.getpid()
    assert out["task_id"] is not None  # it ran inside a Ray task
    assert out["tag"] == "x" and out["run_id"] == "r-42"  # context travelled with it
    # the task's span joined the caller's trace, as a child of the caller's span
    exporter = os.environ.get("LUMOS_TRACE_EXPORTER", "")
    if exporter.startswith("jsonl:"):
        pctx = parent.get_span_context()
        spans = [
            s
            for s in tracing.read_jsonl_spans(exporter[6:])
            if s["name"] == "tool.task" and s["attributes"].get("tool") == "where"
        ]
        assert spans, "no tool.task span was exported by the worker"
        assert spans[-1]["trace_id"] == f"{pctx.trace_id:032x}"
        assert spans[-1]["parent_id"] == f"{pctx.span_id:016x}"
        assert spans[-1]["pid"] == out["pid"]
    # arguments are validated before anything is scheduled
    with pytest.raises(ToolArgumentError):
        await where.acall({"tag": 1.5j})


async def test_errors_inside_a_ray_task_come_back_as_tool_errors(ray_cluster):
    @tool(num_cpus=0.5)
    async def explode(n: int) -> int:
        """Fails with a recognisable message."""
        raise RuntimeError(f"exploded with {n}")

    with pytest.raises(ToolError) as ei:
        await explode.acall({"n": 3})
    assert type(ei.value) is ToolError
    assert "RuntimeError: exploded with 3" in ei.value.message


async def test_a_timed_out_ray_task_tool_is_cancelled(ray_cluster, tmp_path):
    """The caller's timeout stops the Ray task: a KeyboardInterrupt the tool sees (it
    records it), or, if that does not land within the grace period, its worker is
    killed. Either way the tool never runs to its end."""
    import psutil

    from lumos_ray.tools import _api as tools_mod

    started, cancelled, finished = (tmp_path / n for n in ("started", "cancelled", "finished"))

    @tool(num_cpus=0.5)
    def sleepy(folder: str) -> str:
        """Sleeps, then writes a marker file; records a cancellation."""
        import os
        import pathlib
        import signal

        d = pathlib.Path(folder)
        handler = signal.getsignal(signal.SIGINT)
        (d / "started").write_text(f"{os.getpid()} {handler!r}")
        try:
            for _ in range(600):
                time.sleep(0.1)
        except KeyboardInterrupt:  # how ray.cancel interrupts a running task
            (d / "cancelled").touch()
            raise
        (d / "finished").touch()
        return "done"

    call = asyncio.ensure_future(sleepy.acall({"folder": str(tmp_path)}))
    # Give up only once the task runs: on a loaded machine a worker can take longer to
    # start than any fixed timeout, and a cancel racing the task's start is another case.
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert started.exists(), "the tool task never started"
    pid, handler = started.read_text().split(" ", 1)
    assert "default_int_handler" in handler, handler  # the interrupt can reach the tool
    await asyncio.sleep(0.5)  # inside the sleep loop
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(call, 0.1)  # the caller's timeout fires: the task is cancelled
    deadline = time.monotonic() + tools_mod.CANCEL_GRACE_S + 30
    while not cancelled.exists() and psutil.pid_exists(int(pid)):
        assert time.monotonic() < deadline, "the cancelled tool task still runs"
        await asyncio.sleep(0.2)
    assert not finished.exists()


async def test_a_cancelled_tool_that_ignores_the_interrupt_is_killed(ray_cluster, tmp_path):
    """A tool that swallows the KeyboardInterrupt (or is stuck in C code) is force-killed
    after the grace period instead of running on."""
    from lumos_ray.tools import _api as tools_mod

    beat = tmp_path / "beat"

    @tool(num_cpus=0.5)
    def stubborn(folder: str) -> str:
        """Keeps beating, whatever it is told."""
        import pathlib

        b = pathlib.Path(folder) / "beat"
        for i in range(3000):
            try:
                b.write_text(str(i))
                time.sleep(0.1)
            except KeyboardInterrupt:
                continue
        return "done"

    call = asyncio.ensure_future(stubborn.acall({"folder": str(tmp_path)}))
    deadline = time.monotonic() + 120
    while not beat.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert beat.exists(), "the tool task never started"
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(call, 0.5)
    # Grace period, then the kill; give Ray time to deliver it on a busy machine.
    await asyncio.sleep(tools_mod.CANCEL_GRACE_S + 10)
    last = beat.read_text()
    await asyncio.sleep(2)
    assert beat.read_text() == last, "the tool task still runs after its cancellation"


def test_tools_shipped_to_an_actor_run_there_off_the_event_loop(ray_cluster):
    @ray.remote
    class Host:
        def __init__(self, tools: list[Tool]) -> None:
            self.tools = {t.name: t for t in tools}

        async def run(self, name: str, args: dict) -> dict:
            import threading

            loop_thread = threading.get_ident()
            result = await self.tools[name].acall(args)
            return {"result": result, "loop_thread": loop_thread, "pid": os.getpid()}

    @tool
    def thread_of(x: int) -> dict:
        """Report the thread that ran me."""
        import threading

        return {"thread": threading.get_ident(), "x": x * 2}

    # a closure-defined tool ships by value, a built-in by reference
    host = Host.remote([thread_of, get_tool("calculator")])
    try:
        out = ray.get(host.run.remote("thread_of", {"x": "21"}))
        assert out["result"]["x"] == 42  # validated (coerced) inside the actor
        assert out["result"]["thread"] != out["loop_thread"]
        assert out["pid"] != os.getpid()
        assert ray.get(host.run.remote("calculator", {"expression": "2**5"}))["result"] == 32
        with pytest.raises(ToolArgumentError):
            ray.get(host.run.remote("calculator", {}))
    finally:
        ray.kill(host)
