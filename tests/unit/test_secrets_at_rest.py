"""Secrets at rest (issue 14): a secret-named tool argument and a RAG API key never
reach a file lumos writes, while the tool (and the embedder) still get the real value.

Agent turns run in the real AgentActor and Runner, in-process over a real SQLite store
under a temporary LUMOS_HOME (no Ray: the hosted-run path of ``_runner.hosted_execute``,
as in test_runner_hosted); every file under that home is then searched for the secret's
bytes. The model is a shipped test model (FunctionModel) named by import path, so the
workflow definition stored with the run holds no secret of its own: the secret exists
only in this module, and the model puts it into a tool call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.actors import agent as agent_module
from lumos_ray.actors._agent_actor import AgentActor, spec_fingerprint
from lumos_ray.actors._agent_loop import run_turn
from lumos_ray.actors.agent import Agent
from lumos_ray.errors import ConfigError
from lumos_ray.testing import FunctionModel, call_tool, reply
from lumos_ray.tools import tool
from lumos_ray.tools._redact import REDACTED, redact_message
from lumos_ray.workflows import AgentStep, Workflow
from lumos_ray.workflows._runner import Runner, hosted_execute
from lumos_ray.workflows._serialize import definition_version, workflow_to_data

SECRET = "sk-SECRET-123"
#: What the tool was called with, in this process (the hosted path runs it here).
received: list[str] = []


@tool
def call_service(query: str, api_key: str) -> str:
    """Call a service that needs a key.

    Args:
        query: What to ask.
        api_key: The service's API key.
    """
    received.append(api_key)
    return "authorized" if api_key == SECRET else "wrong key"


def keyed_model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    """Calls call_service with the key (once per turn), then answers with its result."""
    last = messages[-1]
    if last.get("role") == "tool":
        return reply(f"service said {last['content']}")
    return call_tool("call_service", {"query": "status", "api_key": SECRET})


def twice_model(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    """Calls the tool twice in one turn, the second time with the key it sent first:
    it can, only if the turn shows it its own earlier call as it made it."""
    calls = [m for m in messages if m.get("role") == "assistant" and m.get("tool_calls")]
    if not calls:
        return call_tool("call_service", {"query": "one", "api_key": SECRET})
    if len(calls) == 1:
        earlier = json.loads(calls[0]["tool_calls"][0]["function"]["arguments"])
        return call_tool("call_service", {"query": "two", "api_key": earlier["api_key"]})
    return reply("both done")


def _files_holding(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    needle = secret.encode()
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LUMOS_HOME", str(home))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{home / 'runs.db'}")

    def no_hop(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the hosted run called its agent through an actor handle")

    monkeypatch.setattr(agent_module, "AgentHandle", no_hop)
    received.clear()
    yield home


async def _stop(actor: AgentActor) -> None:
    import asyncio

    runner: Runner | None = actor.hosted_state.get("runner")
    if runner is None:
        return
    pending = [t for t in (runner._keeper, runner._scheduling, *runner.tasks.values()) if t]
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


# -- the redaction of a stored message ------------------------------------------------
def test_redact_message_copies_an_assistant_tool_call_with_its_secret_redacted() -> None:
    msg = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "f", "arguments": json.dumps({"q": 1, "api_key": SECRET})},
            },
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    out = redact_message(msg)
    assert SECRET not in json.dumps(out) and SECRET in json.dumps(msg)  # a copy
    assert json.loads(out["tool_calls"][0]["function"]["arguments"]) == {
        "q": 1,
        "api_key": REDACTED,
    }
    assert out["tool_calls"][1] is msg["tool_calls"][1]
    plain = {"role": "assistant", "content": "hi"}
    assert redact_message(plain) is plain
    nothing = {"role": "assistant", "tool_calls": [msg["tool_calls"][1]]}
    assert redact_message(nothing) is nothing


# -- the agent loop: stored form redacted, the tool and the turn's model see the key ----
async def test_a_turns_new_messages_hold_the_key_redacted_while_the_tool_and_the_turn_see_it():
    transcript: list[dict[str, Any]] = []
    result = await run_turn(
        model=FunctionModel(twice_model),
        tools={"call_service": call_service},
        instructions="",
        history=[],
        input="go",
        thread_id="t",
        max_steps=5,
        max_tool_retries=2,
        timeout_s=10,
        transcript=transcript,
    )
    assert result.output == "both done"
    assert received == [SECRET, SECRET]  # the second call had the key from the first
    stored = json.dumps(result.new_messages)
    assert SECRET not in stored and REDACTED in stored
    assert SECRET not in json.dumps(transcript) and transcript == result.new_messages
    assert SECRET not in json.dumps(result.tool_calls)
    # Everything but the secret is kept: the tool results say the calls succeeded.
    tools = [m for m in result.new_messages if m["role"] == "tool"]
    assert [m["content"] for m in tools] == ["authorized", "authorized"]


# -- a durable run: run store, checkpoint, events, thread, export ------------------------
async def test_a_durable_runs_files_never_hold_a_secret_tool_argument(home: Path) -> None:
    from lumos_ray.finetune import export_dataset

    spec = Agent(name="keyed", model=FunctionModel(keyed_model), tools=[call_service])
    wf = Workflow(
        name="keyed-wf",
        agents=[spec],
        steps=[AgentStep(id="ask", agent="keyed", input="{{ input }}")],
        output="{{ state.ask }}",
    )
    body = workflow_to_data(wf)
    assert SECRET not in json.dumps(body)  # the definition names the model, no key
    actor = AgentActor(spec, 0, spec_fingerprint(spec), "default")
    try:
        row = await hosted_execute(
            actor, body["name"], definition_version(body), body, "go", "run-sar-1", None, 30
        )
        store = actor.hosted_state["runner"].store
        # A named thread too: the actor saves that turn itself (not with a checkpoint).
        named = await actor.run("again", "named-thread", run_id="run-sar-1", turn_id="turn-x")
    finally:
        await _stop(actor)
    assert row["status"] == "succeeded", row
    assert row["output"] == "service said authorized"  # the tool got the real key
    assert named.output == "service said authorized"
    assert received == [SECRET, SECRET]
    thread = "run-sar-1/0.ask"
    saved = store.load_messages_many("keyed", [thread, "named-thread"])
    for messages in saved.values():
        call = next(m for m in messages if m.get("tool_calls"))
        args = json.loads(call["tool_calls"][0]["function"]["arguments"])
        assert args == {"query": "status", "api_key": REDACTED}
    events = [e for e in store.read_events("run-sar-1") if e["type"] == "tool_call"]
    assert events and all(SECRET not in json.dumps(e) for e in events)
    out = home / "exports" / "threads.jsonl"
    stats = export_dataset(str(out), status=None)
    assert stats.rows >= 1 and REDACTED in out.read_text()
    assert _files_holding(home, SECRET) == []


async def test_a_retried_turn_is_answered_from_the_store_without_the_key_or_a_second_call(
    home: Path,
) -> None:
    """The actor died after saving the turn and Ray re-sent the call (same turn id) to a
    new actor: the turn is answered from the stored messages, the tool is not run again
    (its recorded result is the answer's), and nothing asks for the redacted key."""
    spec = Agent(name="keyed-retry", model=FunctionModel(keyed_model), tools=[call_service])
    first = AgentActor(spec, 0, spec_fingerprint(spec), "default")
    one = await first.run("go", "t-retry", run_id="r", turn_id="turn-1")
    restarted = AgentActor(spec, 0, spec_fingerprint(spec), "default")  # a new process
    again = await restarted.run("go", "t-retry", run_id="r", turn_id="turn-1")
    assert received == [SECRET]  # one tool call in all
    assert again.output == one.output == "service said authorized"
    assert again.new_messages == one.new_messages
    assert SECRET not in json.dumps(again.new_messages) + json.dumps(again.tool_calls)
    assert [c["ok"] for c in again.tool_calls] == [True]
    # The next turn on the thread asks the model again; its history shows the key
    # redacted, and the model sends the key it has (here: it always has it).
    nxt = await restarted.run("once more", "t-retry", run_id="r", turn_id="turn-2")
    assert nxt.output == "service said authorized" and received == [SECRET, SECRET]
    assert _files_holding(home, SECRET) == []


# -- RAG: a collection's config never holds a literal key ------------------------------
RAG_KEY = "sk-rag-literal-0123456789"


def test_a_collection_with_a_literal_api_key_is_refused_and_writes_no_key(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lumos_ray.rag import RagCollection
    from lumos_ray.rag._config import CollectionConfig, EmbeddingConfig, ExtractorConfig

    for cfg in (
        CollectionConfig(
            name="lit-emb",
            embedding=EmbeddingConfig(
                backend="openai", base_url="http://127.0.0.1:9/v1", api_key=RAG_KEY
            ),
        ),
        CollectionConfig(
            name="lit-ext",
            snapshot_dir=str(home / "elsewhere"),
            extractor=ExtractorConfig(
                kind="llm", base_url="http://127.0.0.1:9/v1", model="m", api_key=RAG_KEY
            ),
        ),
    ):
        with pytest.raises(ConfigError) as info:
            RagCollection.open(cfg.name, config=cfg, create=True)
        assert "api_key_env" in (info.value.fix or "") and RAG_KEY not in str(info.value)
    assert _files_holding(home, RAG_KEY) == []


class _Embeddings(BaseHTTPRequestHandler):
    """A local /v1/embeddings that records the Authorization header it was sent."""

    seen: list[str | None] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        type(self).seen.append(self.headers.get("Authorization"))
        data = [{"index": i, "embedding": [1.0, 0.0, 0.0]} for i in range(len(body["input"]))]
        raw = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


def test_a_collection_naming_its_key_variable_stores_the_name_and_uses_the_key_after_reload(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created with ``embedding.api_key_env``, the collection's collection.json holds the
    variable's name only; reopened by name (from that file alone), its embedder sends
    the key the variable holds, read at use."""
    from lumos_ray import runtime
    from lumos_ray.rag import RagCollection
    from lumos_ray.rag import _client as client_module
    from lumos_ray.rag._config import CollectionConfig, EmbeddingConfig
    from lumos_ray.rag._embed import OpenAIEmbedder

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    monkeypatch.setenv("MY_EMBED_KEY", RAG_KEY)
    monkeypatch.setenv("LUMOS_MODEL_KEY_URLS", f"MY_EMBED_KEY={url}")
    # Ray is not what is tested: the collection's actors are not started.
    monkeypatch.setattr(runtime, "is_connected", lambda: True)
    monkeypatch.setattr(client_module, "_router_handle", lambda cfg, root: None)
    _Embeddings.seen = []
    try:
        cfg = CollectionConfig(
            name="env-key",
            embedding=EmbeddingConfig(
                backend="openai", base_url=url, model="e", dim=3, api_key_env="MY_EMBED_KEY"
            ),
        )
        RagCollection.open("env-key", config=cfg, create=True)
        stored = list(home.rglob("collection.json"))
        assert len(stored) == 1 and '"MY_EMBED_KEY"' in stored[0].read_text()
        assert _files_holding(home, RAG_KEY) == []
        reopened = RagCollection.open("env-key")  # by name: the stored config alone
        assert reopened.config.embedding.api_key_env == "MY_EMBED_KEY"
        assert reopened.config.embedding.api_key is None
        vectors = OpenAIEmbedder(reopened.config.embedding).embed(["a", "b"])
        assert vectors.shape == (2, 3)
        assert _Embeddings.seen == [f"Bearer {RAG_KEY}"]
        # A variable the environment does not bind to this URL is never sent there.
        monkeypatch.setenv("LUMOS_MODEL_KEY_URLS", "MY_EMBED_KEY=https://elsewhere.example/v1")
        with pytest.raises(ConfigError, match="MY_EMBED_KEY"):
            OpenAIEmbedder(reopened.config.embedding).embed(["a"])
        assert len(_Embeddings.seen) == 1
    finally:
        server.shutdown()
