"""Tool bounds, idempotency and redaction through a real agent actor (issue 14)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from lumos_ray import Agent, tool
from lumos_ray.testing import ScriptedModel, call_tool, reply
from lumos_ray.tools._api import ToolContext
from lumos_ray.tracing import read_jsonl_spans

pytestmark = pytest.mark.usefixtures("ray_cluster")

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


async def test_agent_with_100_sessions_answers_while_one_tool_hits_its_bound(tmp_path: Path):
    sqlite3.connect(tmp_path / "d.db").execute("CREATE TABLE t (x)").connection.commit()
    # Reply i goes to a thread's i-th assistant turn: a fresh session calls the
    # calculator and answers; the hostile session, on its second turn, runs an
    # endless recursive CTE that only its 8 s bound stops.
    model = ScriptedModel(
        [
            call_tool("calculator", expression="40 + 2"),
            reply("42"),
            call_tool("sql_query", database="d.db", query=ENDLESS),
            reply("the query was stopped"),
        ]
    )
    spec = Agent(
        name="crowd",
        model=model,
        tools=["calculator", "sql_query"],
        workspace=str(tmp_path),
        tool_settings={"sql": {"timeout_s": 8}},
    )
    h = spec.deploy()
    assert (await h.run("warm up", thread_id="hostile")).output == "42"
    hostile = asyncio.create_task(h.run("now the big one", thread_id="hostile"))
    await asyncio.sleep(0.5)  # let its tool start
    others = await asyncio.wait_for(
        asyncio.gather(*(h.run("40 + 2?", thread_id=f"s{i}") for i in range(99))), 120
    )
    assert [r.output for r in others] == ["42"] * 99
    assert not hostile.done()  # the 99 others answered while its tool was still running
    result = await asyncio.wait_for(hostile, 60)
    assert result.output == "the query was stopped"
    assert result.tool_calls[0]["ok"] is False
    tool_msg = next(m for m in result.new_messages if m["role"] == "tool")["content"]
    assert "longer than 8 s" in tool_msg


@tool
def crash_once(marker: str, ctx: ToolContext | None = None) -> str:
    """Kill this process the first time (a native crash), succeed afterwards.

    Args:
        marker: File that records the first call.
    """
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(1)
    return "survived"


async def test_a_turn_retried_after_the_actor_died_sends_the_email_once(tmp_path: Path):
    marker = tmp_path / "crashed"
    model = ScriptedModel(
        [
            call_tool("send_email", to=["bob@example.com"], subject="report", body="done"),
            call_tool("crash_once", marker=str(marker)),
            reply("sent"),
        ]
    )
    spec = Agent(
        name="mailer", model=model, tools=["send_email", crash_once], workspace=str(tmp_path)
    )
    result = await asyncio.wait_for(spec.deploy().run("mail bob", thread_id="m1"), 180)
    assert result.output == "sent" and marker.exists()  # the turn really ran twice
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    sent = json.loads(next(m for m in result.new_messages if m["role"] == "tool")["content"])
    assert sent["duplicate"] is True  # the retry found the first attempt's e-mail


@tool
def always_crash(why: str) -> str:
    """Kill this process every time.

    Args:
        why: Anything.
    """
    os._exit(1)


async def test_a_turn_that_kills_its_actor_every_time_ends_after_bounded_retries():
    spec = Agent(
        name="poison",
        model=ScriptedModel([call_tool("always_crash", why="x"), reply("never")]),
        tools=[always_crash],
        restart={"max_restarts": -1, "max_task_retries": 1},
    )
    with pytest.raises(Exception) as info:
        await asyncio.wait_for(spec.deploy().run("go", thread_id="p1"), 180)
    assert not isinstance(info.value, TimeoutError)


async def test_secret_tool_arguments_are_redacted_in_spans(lumos_home: str):
    @tool
    def login(user: str, password: str) -> str:
        """Pretend to log in.

        Args:
            user: User name.
            password: The password.
        """
        return f"welcome {user}"

    secret = f"pw-{os.urandom(6).hex()}"
    spec = Agent(
        name="login",
        model=ScriptedModel([call_tool("login", user="ada", password=secret), reply("in")]),
        tools=[login],
    )
    result = await spec.deploy().run("log in", thread_id="l1")
    assert result.output == "in" and secret not in result.tool_calls[0]["arguments"]
    exporter = os.environ.get("LUMOS_TRACE_EXPORTER", "")
    if not exporter.startswith("jsonl:"):
        pytest.skip(f"spans are read back from a jsonl exporter, not {exporter!r}")
    span_dir = exporter.removeprefix("jsonl:")
    deadline = time.time() + 30
    calls: list[dict] = []
    while time.time() < deadline and not calls:
        spans = read_jsonl_spans(span_dir)
        calls = [
            s
            for s in spans
            if s["name"] == "agent.tool_call" and s.get("attributes", {}).get("tool") == "login"
        ]
        await asyncio.sleep(0.5)
    assert calls, "no agent.tool_call span for the login call"
    assert secret not in json.dumps(read_jsonl_spans(span_dir))
    assert "[REDACTED]" in json.dumps(calls[0])


async def test_a_retried_tool_step_sends_the_same_idempotency_key():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from lumos_ray import ToolStep, Workflow, start_run, wait_run

    keys: list[str | None] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            keys.append(self.headers.get("Idempotency-Key"))
            if len(keys) == 1:
                time.sleep(20)  # the first attempt times out after it was received
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        step = ToolStep(
            id="hook",
            tool="webhook_post",
            args={"url": f"http://127.0.0.1:{server.server_port}/", "payload": {"a": 1}},
            settings={"http": {"allow_private": True}},
            timeout_s=8,
            retries=2,
            backoff_s=0,
        )
        run_id = await start_run(Workflow(name="hook-retry", steps=[step]), {})
        info = await wait_run(run_id, timeout=120)
    finally:
        server.shutdown()
    assert info.status == "succeeded", (info.error, keys)
    assert len(keys) >= 2 and len(set(keys)) == 1 and keys[0]
