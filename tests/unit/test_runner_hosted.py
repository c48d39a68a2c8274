"""A run whose workflow is one agent step, executed in that agent's actor
(``_runner.hosted_execute``): the agent's turn is an in-process call, and the run is
stored exactly as the runner stores one (row, checkpoint with the turn's messages,
events, final status), under a lease that names the agent, cancellable through
``hosted_cancel``.

The real AgentActor object and the real Runner in-process over a real SQLite store
(no Ray: an actor hop would need ``AgentHandle``, which the tests make fail)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.actors import agent as agent_module
from lumos_ray.actors._agent_actor import AgentActor, spec_fingerprint
from lumos_ray.actors.agent import Agent
from lumos_ray.errors import NotFoundError
from lumos_ray.testing import ScriptedModel
from lumos_ray.tools import tool
from lumos_ray.tools._registry import register_tool, unregister
from lumos_ray.workflows import AgentStep, Workflow, _runner
from lumos_ray.workflows._runner import Runner, host_of, hosted_cancel, hosted_execute
from lumos_ray.workflows._serialize import definition_version, workflow_to_data

GATE_TOOL = "h11-hosted-gate"
_gate: asyncio.Event | None = None


async def _gate_tool() -> str:
    """Wait until the test opens the gate."""
    assert _gate is not None
    await _gate.wait()
    return "opened"


@pytest.fixture(autouse=True)
def store_and_no_hop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path / 'runs.db'}")

    def no_hop(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the hosted run called its agent through an actor handle")

    monkeypatch.setattr(agent_module, "AgentHandle", no_hop)
    register_tool(tool(_gate_tool, name=GATE_TOOL))
    try:
        yield
    finally:
        unregister(GATE_TOOL)


def _setup(name: str, replies: list[Any], tools: list[Any]) -> tuple[AgentActor, dict, str]:
    spec = Agent(name=name, model=ScriptedModel(replies), tools=tools)
    wf = Workflow(
        name=f"{name}-wf",
        agents=[spec],
        steps=[AgentStep(id="say", agent=name, input="{{ input }}")],
        output="{{ state.say }}",
    )
    actor = AgentActor(spec, 0, spec_fingerprint(spec), "default")
    body = workflow_to_data(wf)
    return actor, body, definition_version(body)


async def _stop(actor: AgentActor) -> None:
    runner: Runner | None = actor.hosted_state.get("runner")
    if runner is None:
        return
    pending = [t for t in (runner._keeper, runner._scheduling, *runner.tasks.values()) if t]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def test_a_one_agent_step_run_in_its_agents_actor_is_stored_like_a_runners() -> None:
    actor, body, version = _setup(
        "hosted-unit",
        [{"tool": "calculator", "args": {"expression": "1 + 2"}}, "3"],
        ["calculator"],
    )
    try:
        row = await hosted_execute(actor, body["name"], version, body, "add", "run-h11-a", None, 30)
        runner: Runner = actor.hosted_state["runner"]
    finally:
        await _stop(actor)
    assert (row["id"], row["status"], row["output"]) == ("run-h11-a", "succeeded", "3")
    assert runner._scheduling is None  # a hosted runner fires no schedules
    assert host_of(runner.id) == "hosted-unit"
    store = runner.store
    stored = store.get_run("run-h11-a")
    assert (stored["status"], stored["output"], stored["owner"]) == ("succeeded", "3", None)
    assert [r["id"] for r in store.list_runs()] == ["run-h11-a"]
    assert store.load_checkpoints("run-h11-a") == {"0.say": "3"}
    kinds = [e["type"] for e in store.read_events("run-h11-a")]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert "tool_call" in kinds and "step_finished" in kinds
    thread = "run-h11-a/0.say"
    saved = store.load_messages_many("hosted-unit", [thread])[thread]
    assert [m["role"] for m in saved] == ["user", "assistant", "tool", "assistant"]


async def test_a_hosted_run_holds_a_lease_naming_its_agent_and_is_cancelled_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    global _gate
    _gate = asyncio.Event()
    monkeypatch.setattr(_runner, "_ROW_S", 0.01)
    actor, body, version = _setup(
        "hosted-gated", [{"tool": GATE_TOOL, "args": {}}, "done"], [GATE_TOOL]
    )
    try:
        call = asyncio.ensure_future(
            hosted_execute(actor, body["name"], version, body, "go", "run-h11-b", None, 30)
        )
        stored = await _stored(actor, "run-h11-b")  # while its turn waits on the gate
        assert stored["status"] == "running"
        assert host_of(stored["owner"]) == "hosted-gated"
        assert await hosted_cancel(actor, "run-nobody-runs") is False
        assert await hosted_cancel(actor, "run-h11-b") is True
        row = await call
        store = actor.hosted_state["runner"].store
    finally:
        _gate.set()
        await _stop(actor)
    assert row["status"] == "cancelled"
    stored = store.get_run("run-h11-b")
    assert (stored["status"], stored["owner"]) == ("cancelled", None)
    assert [e["type"] for e in store.read_events("run-h11-b")][-1] == "run_cancelled"


async def _stored(actor: AgentActor, run_id: str) -> dict[str, Any]:
    for _ in range(3000):  # bounded wait for the row's commit
        runner = actor.hosted_state.get("runner")
        if runner is not None:
            try:
                return runner.store.get_run(run_id)
            except NotFoundError:
                pass
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} was never stored")


def test_long_agent_names_are_not_hosted() -> None:
    assert _runner.host_owner_fits("a" * 40)
    assert not _runner.host_owner_fits("a" * 60)
    assert host_of("runner-0123456789ab") is None
    assert host_of(None) is None
    assert os.environ.get("LUMOS_STORE_URL", "").startswith("sqlite:///")


async def test_a_stored_tool_call_event_names_the_arguments_with_secrets_redacted() -> None:
    @tool
    def h11_login(user: str, password: str) -> str:
        """Pretend to log in."""
        return f"hello {user}"

    register_tool(h11_login)
    try:
        actor, body, version = _setup(
            "hosted-redact",
            [{"tool": "h11_login", "args": {"user": "ann", "password": "hunter2"}}, "in"],
            ["h11_login"],
        )
        try:
            await hosted_execute(actor, body["name"], version, body, "go", "run-h11-r", None, 30)
            store = actor.hosted_state["runner"].store
        finally:
            await _stop(actor)
    finally:
        unregister("h11_login")
    (call,) = [e["data"] for e in store.read_events("run-h11-r") if e["type"] == "tool_call"]
    assert (call["tool"], call["ok"]) == ("h11_login", True)
    assert '"ann"' in call["arguments"]
    assert "hunter2" not in call["arguments"]
