"""A run always ends: an output that names a skipped step, or one the store cannot
keep, fails the run with the reason instead of leaving it "running" forever (seen: the
shipped approval workflow resumed with ``approved: false`` stayed running).

The real Runner in-process over a real SQLite store; the workflows use the calculator
tool and human steps, which run in the runner's process (no Ray)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.workflows._definition import load_workflow
from lumos_ray.workflows._runner import Runner
from lumos_ray.workflows._serialize import definition_version, workflow_to_data

REPO = Path(__file__).resolve().parents[2]


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


async def _run(runner: Runner, body: dict[str, Any], input: Any) -> dict[str, Any]:
    try:
        run_id = await runner.start(body["name"], definition_version(body), body, input)
        return await runner.wait(run_id, 30)
    finally:
        await _stop(runner)


async def _stop(runner: Runner) -> None:
    pending = [t for t in (runner._keeper, runner._scheduling, *runner.tasks.values()) if t]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _calc(expression: str) -> dict[str, Any]:
    return {"id": "calc", "tool": "calculator", "args": {"expression": expression}}


async def test_the_shipped_approval_workflow_finishes_when_not_approved(runner: Runner) -> None:
    body = workflow_to_data(load_workflow(REPO / "configs" / "workflows" / "approval.yaml"))
    run_id = await runner.start("approval", definition_version(body), body, {"amount": 120})
    try:
        assert (await runner.wait(run_id, 30))["status"] == "suspended"
        await runner.resume(run_id, {"approved": False})
        row = await runner.wait(run_id, 30)
    finally:
        await _stop(runner)
    assert row["status"] == "succeeded", row["error"]
    assert row["output"] == {"approved": False, "total": None}


async def test_an_output_naming_a_skipped_step_fails_the_run_and_says_why(runner: Runner) -> None:
    body = {
        "name": "skips",
        "steps": [{**_calc("1 + 1"), "id": "total", "when": "false"}],
        "output": {"total": "{{ state.total }}"},
    }
    row = await _run(runner, body, {})
    assert row["status"] == "failed"
    assert "state.total" in row["error"]["message"] and "default(none)" in row["error"]["fix"]


async def test_an_output_the_store_cannot_keep_fails_the_run(runner: Runner) -> None:
    body = {"name": "unstorable", "steps": [_calc("2")], "output": "{{ range(3) }}"}
    row = await _run(runner, body, {})
    assert row["status"] == "failed"
    assert "not storable JSON" in row["error"]["message"]
