"""Secrets at rest on a real cluster (issue 14): a key a model puts into a tool call,
and a RAG collection's embedding key, reach no file lumos writes.

The secrets are made from ``LUMOS_TEST_MODEL_KEY``, which the test cluster's processes
inherit (tests/integration/conftest.py), so the model functions and tools below can
make and check them inside the agent actors: they appear in no source file, workflow
definition or argument that lumos stores for a reason of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lumos_ray import Agent, Workflow, start_run, tool, wait_run
from lumos_ray.testing import FunctionModel, call_tool, reply
from lumos_ray.workflows import AgentStep, SupervisorStep

REDACTED = "[REDACTED]"


def _secret() -> str:
    """This test's tool key: the same in every process of the test cluster."""
    seed = os.environ["LUMOS_TEST_MODEL_KEY"].encode()
    return "sk-SECRET-123-" + hashlib.sha256(b"secrets-at-rest" + seed).hexdigest()[:16]


@tool
def sar_call_service(query: str, api_key: str) -> str:
    """Call a service that needs a key.

    Args:
        query: What to ask.
        api_key: The service's API key.
    """
    return "authorized" if api_key == _secret() else "wrong key"


def sar_keyed_model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    """Calls sar_call_service with the key once per turn, then answers with its result."""
    last = messages[-1]
    if last.get("role") == "tool":
        return reply(f"service said {last['content']}")
    return call_tool("sar_call_service", {"query": "status", "api_key": _secret()})


def sar_helper_model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    return reply("helped")


@tool
def sar_gated_service(query: str, api_key: str, gate: str) -> str:
    """Call a service that needs a key, once ``gate`` exists (each start is noted).

    Args:
        query: What to ask.
        api_key: The service's API key.
        gate: A file whose existence lets the call finish.
    """
    import time

    with open(gate + ".started", "a") as f:
        f.write(f"{os.getpid()}\n")
    deadline = time.time() + 120
    while not os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.1)
    return "authorized" if api_key == _secret() else "wrong key"


def sar_gated_model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    """Calls sar_gated_service with the key and the gate the user names, then answers."""
    last = messages[-1]
    if last.get("role") == "tool":
        return reply(f"service said {last['content']}")
    gate = next(m["content"] for m in messages if m.get("role") == "user")
    return call_tool("sar_gated_service", {"query": "q", "api_key": _secret(), "gate": gate})


def _files_holding(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    found = []
    for p in root.rglob("*"):
        try:
            if p.is_file() and needle in p.read_bytes():
                found.append(str(p.relative_to(root)))
        except OSError:  # a socket, or a file gone meanwhile
            continue
    return sorted(found)


async def test_a_durable_runs_files_never_hold_a_secret_tool_argument(
    ray_cluster: Any, lumos_home: str
) -> None:
    """Three stored forms of a turn: an agent step's turn saved with its checkpoint, a
    streamed turn on a named thread (saved by the agent actor), and a supervisor's
    ``AgentTurn`` (its checkpoint holds the turn's messages); then a `runs export`.
    Every file under LUMOS_HOME is searched, and so is the embedded Ray cluster's own
    folder (its logs and session files)."""
    from lumos_ray.finetune import export_dataset
    from lumos_ray.store import open_store

    keyed = Agent(name="sar-keyed", model=FunctionModel(sar_keyed_model), tools=[sar_call_service])
    streamed = Agent(
        name="sar-streamed",
        model=FunctionModel(sar_keyed_model),
        tools=[sar_call_service],
        stream=True,
    )
    boss = Agent(name="sar-boss", model=FunctionModel(sar_keyed_model), tools=[sar_call_service])
    helper = Agent(name="sar-helper", model=FunctionModel(sar_helper_model))
    wf = Workflow(
        name="secrets-at-rest",
        agents=[keyed, streamed, boss, helper],
        steps=[
            AgentStep(id="plain", agent="sar-keyed", input="{{ input }}"),
            AgentStep(id="named", agent="sar-streamed", input="{{ input }}", thread="sar-named"),
            SupervisorStep(id="sup", supervisor={"agent": "sar-boss", "agents": ["sar-helper"]}),
        ],
    )
    run_id = await start_run(wf, "go")
    info = await wait_run(run_id, timeout=180)
    assert info.status == "succeeded", info.error
    # The tool got the real key in every turn.
    assert info.output["plain"] == "service said authorized"
    assert info.output["named"] == "service said authorized"
    assert info.output["sup"]["output"] == "service said authorized"

    secret = _secret()
    store = open_store()
    checkpoints = store.load_checkpoints(run_id)
    turn = json.dumps(checkpoints)
    assert "sar_call_service" in turn and REDACTED in turn and secret not in turn
    threads = store.load_messages_many("sar-keyed", [f"{run_id}/0.plain"])
    threads |= store.load_messages_many("sar-streamed", ["sar-named"])
    for thread, messages in threads.items():
        call = next(m for m in messages if m.get("tool_calls"))
        args = json.loads(call["tool_calls"][0]["function"]["arguments"])
        assert args == {"query": "status", "api_key": REDACTED}, thread
    events = json.dumps(store.read_events(run_id), default=str)
    assert "tool_call" in events and secret not in events
    out = Path(lumos_home) / "exports" / f"{run_id}.jsonl"
    stats = export_dataset(str(out), workflow="secrets-at-rest", status=None)
    assert stats.rows >= 1 and REDACTED in out.read_text()
    assert _files_holding(Path(lumos_home), secret) == []
    if ray_cluster.temp_dir:  # None when the tests run against a cluster of yours
        assert _files_holding(Path(ray_cluster.temp_dir), secret) == []


async def test_a_turn_whose_actor_dies_mid_tool_call_is_asked_again_and_stores_no_key(
    ray_cluster: Any, lumos_home: str, tmp_path: Path
) -> None:
    """The agent's actor dies while the tool holds the key: nothing of the turn was
    stored, the resumed run asks the model again (no stored argument is needed), the
    new call gets the real key, and no file holds it afterwards."""
    from lumos_ray import execute_run, list_runs
    from lumos_ray.actors._agent_actor import actor_name
    from lumos_ray.runtime import current_settings, kill_actor
    from lumos_ray.store import open_store

    gate = tmp_path / "open"
    started = tmp_path / "open.started"
    spec = Agent(name="sar-dies", model=FunctionModel(sar_gated_model), tools=[sar_gated_service])
    wf = Workflow(
        name="sar-dies-wf",
        agents=[spec],
        steps=[AgentStep(id="say", agent="sar-dies", input="{{ input }}")],
        output="{{ state.say }}",
    )
    call = asyncio.ensure_future(execute_run(wf, str(gate), timeout=300))
    for _ in range(1200):  # bounded: 120 s for the tool to start
        if started.exists():
            break
        await asyncio.sleep(0.1)
    assert started.exists(), "the tool never started"
    tenant = current_settings().tenant_id
    assert kill_actor(actor_name(spec.name, 0, tenant), no_restart=False)
    # ray.kill only asks: the gate opens once the asked-again call has started in the
    # restarted actor, so the first call cannot finish before its actor dies.
    for _ in range(1200):  # bounded: 120 s
        if len(started.read_text().split()) >= 2:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the turn was not asked again in a new actor within 120 s")
    gate.touch()
    info = await call
    assert info.status == "succeeded", info.error
    assert info.output == "service said authorized"  # the new call had the real key
    assert len(started.read_text().split()) == 2  # the tool ran again, in a new actor
    assert [r.id for r in await list_runs() if r.workflow == wf.name] == [info.id]
    secret = _secret()
    thread = f"{info.id}/0.say"
    messages = open_store().load_messages_many("sar-dies", [thread])[thread]
    call_msg = next(m for m in messages if m.get("tool_calls"))
    args = json.loads(call_msg["tool_calls"][0]["function"]["arguments"])
    assert args == {"query": "q", "api_key": REDACTED, "gate": str(gate)}
    assert _files_holding(Path(lumos_home), secret) == []


class _Embeddings(BaseHTTPRequestHandler):
    """A local /v1/embeddings recording the Authorization header of every request."""

    seen: list[str | None] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).seen.append(self.headers.get("Authorization"))
        data = []
        for i, text in enumerate(body["input"]):
            h = hashlib.sha256(text.encode()).digest()
            data.append({"index": i, "embedding": [b / 255 + 0.01 for b in h[:8]]})
        raw = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


def test_a_collection_names_its_key_variable_and_uses_the_key_after_its_actors_restart(
    ray_cluster: Any, lumos_home: str
) -> None:
    """An `openai`-embedding collection created with ``api_key_env``: its files hold the
    variable's name, never the key; with its actors gone, reopened by name from its
    collection.json alone, its embedder sends the key again (read from the workers'
    environment, bound to 127.0.0.1 by the test cluster's LUMOS_MODEL_KEY_URLS)."""
    from lumos_ray.rag import CollectionConfig, EmbeddingConfig, RagCollection
    from lumos_ray.rag._names import registry_dir, router_actor_name, shard_actor_name
    from lumos_ray.runtime import kill_actor

    key = os.environ["LUMOS_TEST_MODEL_KEY"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    _Embeddings.seen = []
    cfg = CollectionConfig(
        name="sar-env-key",
        embedding=EmbeddingConfig(
            backend="openai", base_url=url, model="e", dim=8, api_key_env="LUMOS_TEST_MODEL_KEY"
        ),
    )
    coll = RagCollection.open("sar-env-key", config=cfg, create=True)
    try:
        report = coll.upsert([{"doc_id": "a", "text": "Otters hold hands while they sleep."}])
        assert report.chunks >= 1
        assert _Embeddings.seen and set(_Embeddings.seen) == {f"Bearer {key}"}
        root = Path(coll.root)
        assert '"LUMOS_TEST_MODEL_KEY"' in (root / "collection.json").read_text()
        for name in [router_actor_name("sar-env-key", "default")] + [
            shard_actor_name("sar-env-key", "default", i) for i in range(cfg.num_shards)
        ]:
            kill_actor(name)
        before = len(_Embeddings.seen)
        reopened = RagCollection.open("sar-env-key")  # by name: the stored config alone
        assert reopened.config.embedding.api_key_env == "LUMOS_TEST_MODEL_KEY"
        reopened.query("otters", mode="naive", k=1)
        assert len(_Embeddings.seen) > before
        assert set(_Embeddings.seen) == {f"Bearer {key}"}
        written = [root, Path(registry_dir("default", lumos_home))]
        assert [f for d in written for f in _files_holding(d, key)] == []
    finally:
        try:
            RagCollection.open("sar-env-key").drop()
        finally:
            server.shutdown()
