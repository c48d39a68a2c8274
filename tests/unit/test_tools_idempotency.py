"""Agent tool calls carry an idempotency key that survives a retried turn, and
secret-looking arguments never reach events or the tool-call log (issue 14).

The real agent loop (``run_turn``) driven by the shipped ScriptedModel, with the
real ``send_email`` built-in writing to a workspace outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lumos_ray.actors._agent_loop import run_turn, turn_key
from lumos_ray.actors.agent import Agent, RestartPolicy
from lumos_ray.testing import ScriptedModel, call_tool, reply
from lumos_ray.tools._api import ToolContext, get_tool, redact_arguments, tool

SEEN_KEYS: list[str | None] = []


@tool
def record_key(note: str, ctx: ToolContext | None = None) -> str:
    """Record the idempotency key this call got.

    Args:
        note: Anything.
    """
    SEEN_KEYS.append(ctx.idempotency_key if ctx else None)
    return "ok"


async def _turn(model: Any, ws: Path, key: str, events: list | None = None) -> Any:
    tools = {t.name: t for t in (get_tool("send_email"), record_key)}
    return await run_turn(
        model=model,
        tools=tools,
        instructions="",
        history=[],
        input="mail bob",
        thread_id="t1",
        max_steps=5,
        max_tool_retries=3,
        timeout_s=30,
        tool_ctx=ToolContext(run_id="r1", thread_id="t1", workspace=str(ws)),
        emit=(lambda kind, data: events.append((kind, data))) if events is not None else None,
        key=key,
    )


def _email_turn() -> ScriptedModel:
    return ScriptedModel(
        [call_tool("send_email", to=["bob@example.com"], subject="hi", body="x"), reply("sent")]
    )


async def test_a_retried_turn_does_not_send_the_email_twice(tmp_path: Path):
    key = turn_key("r1", "t1", 0, "mail bob")
    first = await _turn(_email_turn(), tmp_path, key)
    again = await _turn(_email_turn(), tmp_path, turn_key("r1", "t1", 0, "mail bob"))
    assert first.output == again.output == "sent"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    second_result = json.loads(again.new_messages[2]["content"])
    assert second_result["duplicate"] is True
    # The next turn of the thread (longer history) is a new action: it sends.
    await _turn(_email_turn(), tmp_path, turn_key("r1", "t1", 2, "mail bob"))
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


async def test_each_tool_call_gets_its_own_stable_key(tmp_path: Path):
    script = [
        {"calls": [{"tool": "record_key", "args": {"note": "a"}},
                   {"tool": "record_key", "args": {"note": "b"}}]},
        call_tool("record_key", note="c"),
        reply("done"),
    ]  # fmt: skip
    SEEN_KEYS.clear()
    await _turn(ScriptedModel(script), tmp_path, "k1")
    first = list(SEEN_KEYS)
    SEEN_KEYS.clear()
    await _turn(ScriptedModel(script), tmp_path, "k1")
    assert first == SEEN_KEYS and len(set(first)) == 3 and all(first)
    SEEN_KEYS.clear()
    await _turn(ScriptedModel(script), tmp_path, "k2")
    assert not set(first) & set(SEEN_KEYS)


async def test_secret_arguments_are_redacted_in_events_and_the_call_log(tmp_path: Path):
    args = {"note": "visible", "api_key": "sk-live-123", "headers": {"Authorization": "Bearer t0k"}}
    secretive = tool(
        lambda note, api_key, headers: "ok", name="secretive", description="Takes a key."
    )
    events: list = []
    result = await run_turn(
        model=ScriptedModel([call_tool("secretive", **args), reply("done")]),
        tools={"secretive": secretive},
        instructions="",
        history=[],
        input="go",
        thread_id="t2",
        max_steps=3,
        max_tool_retries=1,
        timeout_s=30,
        tool_ctx=ToolContext(workspace=str(tmp_path)),
        emit=lambda kind, data: events.append((kind, data)),
        key="k",
    )
    streamed = [d for k, d in events if k == "tool_call"]
    assert streamed and streamed[0]["ok"] is True
    for shown in (streamed[0]["arguments"], result.tool_calls[0]["arguments"]):
        assert "sk-live-123" not in shown and "t0k" not in shown
        assert json.loads(shown) == {
            "note": "visible",
            "api_key": "[REDACTED]",
            "headers": {"Authorization": "[REDACTED]"},
        }


def test_malformed_arguments_are_scrubbed_too():
    shown = redact_arguments('{"password": "hunter2", "user": "bob"')
    assert "hunter2" not in shown and '"user": "bob"' in shown


def test_agent_turns_are_retried_a_bounded_number_of_times():
    assert Agent(name="a").restart.max_task_retries == 2
    try:
        RestartPolicy(max_task_retries=-1)
    except ValueError as exc:
        assert "greater than or equal to 0" in str(exc)
    else:  # pragma: no cover - the assertion is the point
        raise AssertionError("an unbounded retry policy was accepted")
