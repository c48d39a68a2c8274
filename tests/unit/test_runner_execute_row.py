"""``Runner.execute`` writes a run's row with the run's first write: a short run is one
commit (row, checkpoint, events and final status together), a longer one is stored as
running once ``_ROW_S`` passed, an id is handed out only once its row is stored, and
an input the store would refuse fails before any step runs.

The real Runner in-process over a real SQLite store; the steps are tools that run in
the runner's process (no Ray)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.errors import InputValidationError, NotFoundError
from lumos_ray.tools._registry import register_tool, unregister
from lumos_ray.workflows import _runner
from lumos_ray.workflows._runner import Runner
from lumos_ray.workflows._serialize import definition_version

CALC = {
    "name": "calc-once",
    "steps": [{"id": "total", "tool": "calculator", "args": {"expression": "{{ input.e }}"}}],
    "output": "{{ state.total }}",
}
GATE_TOOL = "h9-test-row-gate"
GATED = {
    "name": "gated",
    "steps": [{"id": "wait", "tool": GATE_TOOL, "args": {}}],
    "output": "{{ state.wait }}",
}


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    saved = os.environ.get("LUMOS_STORE_URL")
    os.environ["LUMOS_STORE_URL"] = f"sqlite:///{tmp_path / 'runs.db'}"
    try:
        yield Runner(auto_recover=False, tenant="default")
    finally:
        if saved is None:
            os.environ.pop("LUMOS_STORE_URL", None)
        else:
            os.environ["LUMOS_STORE_URL"] = saved


async def _stop(runner: Runner) -> None:
    pending = [t for t in (runner._keeper, runner._scheduling, *runner.tasks.values()) if t]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _execute(runner: Runner, body: dict[str, Any], input: Any, wait_s: float) -> Any:
    return await runner.execute(body["name"], definition_version(body), body, input, wait_s=wait_s)


async def test_a_short_run_is_one_commit_and_stored_when_execute_answers(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_runner, "_ROW_S", 3600.0)  # only the run's own write takes the row
    try:
        await _execute(runner, CALC, {"e": "1 + 1"}, 30)  # registers the definition
        before = runner.committer.commits
        row = await _execute(runner, CALC, {"e": "2 * 3"}, 30)
        commits = runner.committer.commits - before
    finally:
        await _stop(runner)
    assert row["status"] == "succeeded" and row["output"] == 6
    assert commits == 1  # the row, the step's checkpoint, the events and the status
    stored = runner.store.get_run(row["id"])
    assert (stored["status"], stored["output"], stored["owner"]) == ("succeeded", 6, None)
    assert runner.store.load_checkpoints(row["id"]) == {"0.total": 6}
    kinds = [e["type"] for e in runner.store.read_events(row["id"])]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"


async def test_an_id_handed_out_before_the_run_ends_is_already_stored(runner: Runner) -> None:
    try:
        row = await _execute(runner, CALC, {"e": "1 + 2"}, 0)  # answer at once
        assert runner.store.get_run(row["id"])["workflow"] == "calc-once"
        done = await runner.wait(row["id"], 30)
    finally:
        await _stop(runner)
    assert done["status"] == "succeeded" and done["output"] == 3


async def test_a_longer_run_is_stored_as_running_before_it_ends(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_runner, "_ROW_S", 0.01)
    gate = asyncio.Event()

    async def gate_tool() -> str:
        """Wait until the test opens the gate."""
        await gate.wait()
        return "opened"

    register_tool(_named(gate_tool, GATE_TOOL))
    try:
        call = asyncio.ensure_future(_execute(runner, GATED, None, 30))
        run_id = await _first_run_id(runner)
        stored = await _stored(runner, run_id)  # while its one step still waits
        assert stored["status"] == "running"
        assert runner.store.load_checkpoints(run_id) == {}
        gate.set()
        row = await call
    finally:
        unregister(GATE_TOOL)
        await _stop(runner)
    assert row["id"] == run_id and row["status"] == "succeeded" and row["output"] == "opened"


async def test_an_input_the_store_refuses_fails_before_any_step_runs(runner: Runner) -> None:
    try:
        with pytest.raises(InputValidationError, match="not storable JSON"):
            await _execute(runner, CALC, {"e": "1 + 1", "x": float("nan")}, 30)
        assert runner.tasks == {}
        assert runner.store.list_runs() == []
    finally:
        await _stop(runner)


def _named(fn: Any, name: str) -> Any:
    from lumos_ray.tools import tool

    return tool(fn, name=name)


async def _first_run_id(runner: Runner) -> str:
    for _ in range(3000):  # bounded wait for the run to be launched
        if runner.tasks:
            return next(iter(runner.tasks))
        await asyncio.sleep(0.01)
    raise AssertionError("the run was never launched")


async def _stored(runner: Runner, run_id: str) -> dict[str, Any]:
    for _ in range(3000):  # bounded wait for the row's commit
        try:
            return runner.store.get_run(run_id)
        except NotFoundError:
            await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} was never stored")
