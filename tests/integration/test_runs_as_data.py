"""Durable runs store data, not code: versions, resume across a re-registration, and
raw store rows free of pickles and secrets."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lumos_ray import (
    Agent,
    AgentStep,
    FunctionStep,
    HumanStep,
    Workflow,
    resume_run,
    start_run,
    wait_run,
)
from lumos_ray.actors import OpenAIChatModel
from lumos_ray.errors import NotFoundError
from lumos_ray.runtime import current_settings

pytestmark = pytest.mark.usefixtures("ray_cluster")
H = "tests.integration._wf_helpers"
KEY_ENV = "LUMOS_TEST_MODEL_KEY"  # set by the integration conftest before the cluster starts


def _approval_workflow(factor: int) -> Workflow:
    return Workflow(
        name="versioned",
        steps=[
            FunctionStep(id="first", function=f"{H}:add_one", args={"x": 1}),
            HumanStep(id="ok", human={"prompt": "go?", "schema": {"type": "boolean"}}),
            FunctionStep(id="last", function=f"{H}:identity", args={"x": factor}),
        ],
    )


async def test_a_suspended_run_resumes_on_the_version_it_started_with() -> None:
    v1, v2 = _approval_workflow(1), _approval_workflow(2)
    run1 = await start_run(v1, {})
    info1 = await wait_run(run1, timeout=120)
    assert info1.status == "suspended"
    run2 = await start_run(v2, {})  # registers version 2 under the same name
    info2 = await wait_run(run2, timeout=120)
    assert info1.version != info2.version

    done1 = await wait_run((await resume_run(run1, True)).id, timeout=120)
    assert done1.status == "succeeded", done1.error
    assert done1.output["last"] == 1  # version 1's definition, not the newest
    assert done1.version == info1.version

    # By name alone: the newest registered version.
    run3 = await start_run("versioned", {})
    assert (await wait_run(run3, timeout=120)).version == info2.version

    # `lumos workflows list/show` read the registered definitions back, as data.
    from click.testing import CliRunner

    from lumos_ray.cli import _load_commands, cli

    _load_commands()
    invoke = CliRunner().invoke  # the CLI runs its own event loop: call it from a thread
    listed = await asyncio.to_thread(invoke, cli, ["workflows", "list", "versioned", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {info1.version, info2.version} <= {r["version"] for r in json.loads(listed.output)}
    shown = await asyncio.to_thread(
        invoke, cli, ["workflows", "show", "versioned", "--version", str(info1.version), "--json"]
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["body"]["steps"][2]["args"] == {"x": 1}


async def test_an_unregistered_workflow_or_version_is_a_clear_error() -> None:
    with pytest.raises(NotFoundError) as err:
        await start_run("never-registered-anywhere", {})
    assert "never-registered-anywhere" in str(err.value) and err.value.fix
    await start_run(_approval_workflow(3), {})
    with pytest.raises(NotFoundError, match="registered versions") as err:
        await start_run("versioned", {}, version="0000000000000000")
    assert err.value.fix


class _ChatServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in (the model server is not under test here) that
    records the Authorization header each request carried."""

    seen: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        _ChatServer.seen.append(self.headers.get("authorization", ""))
        body = json.dumps(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "keyed answer"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def chat_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


async def test_store_rows_hold_no_pickles_and_no_keys(chat_server: str) -> None:
    key = os.environ[KEY_ENV]
    model = OpenAIChatModel("m", chat_server, api_key_env=KEY_ENV)
    agent = Agent(name="keyed", model=model)
    wf = Workflow(name="keyed", agents=[agent], steps=[AgentStep(id="a", agent="keyed")])
    info = await wait_run(await start_run(wf, "hello"), timeout=120)
    assert info.status == "succeeded", info.error
    assert info.output["a"] == "keyed answer"
    assert f"Bearer {key}" in _ChatServer.seen  # the key was read where the agent ran

    url = current_settings().resolved_store_url()
    assert url.startswith("sqlite:///")
    db = sqlite3.connect(Path(url.removeprefix("sqlite:///")))
    try:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        cells = 0
        for table in tables:
            for row in db.execute(f'select * from "{table}"'):
                for cell in row:
                    cells += 1
                    raw = cell if isinstance(cell, bytes) else str(cell).encode()
                    assert not isinstance(cell, bytes), f"binary cell in {table}: {raw[:40]!r}"
                    assert key.encode() not in raw, f"the API key is stored in {table}"
                    assert b"cloudpickle" not in raw and b"\x80\x05\x95" not in raw
    finally:
        db.close()
    assert cells > 0 and "runs" in tables and "definitions" in tables


async def test_a_step_whose_code_is_gone_fails_naming_its_import_path() -> None:
    wf = Workflow(name="gone", steps=[FunctionStep(id="f", function=f"{H}:removed_in_an_upgrade")])
    info = await wait_run(await start_run(wf, {}), timeout=120)
    assert info.status == "failed"
    assert f"{H}" in info.error["message"] and "removed_in_an_upgrade" in info.error["message"]
