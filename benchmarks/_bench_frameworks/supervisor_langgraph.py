"""LangGraph side of ``benchmarks/supervisor.py`` (runs in ``.venv-bench``).

LangGraph's supervisor pattern with its public API (``langgraph-supervisor`` is not
in the pinned, offline benchmark env): two ``create_react_agent`` sub-agents, each
wrapped as a tool of a supervisor ``create_react_agent`` that has an
``AsyncSqliteSaver`` checkpointer (WAL, synchronous=NORMAL, as lumos_ray's SQLite
store). The sub-agents are invoked inside the tool with the tool's config, LangGraph's
normal way to call a graph from a tool. Fake chat models subclass LangChain's
``BaseChatModel`` and follow ``supervisor_agents.step_of``; tools run the same bodies.

Driven rep by rep over stdin/stdout by the benchmark (``_harness.serve``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import serve
from langchain_core.runnables import RunnableConfig  # a tool's config parameter: resolved by name
from supervisor_agents import ANSWER, PROMPT, add_impl, multiply_impl, step_of

for k, v in {
    "OTEL_SDK_DISABLED": "true",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
}.items():
    os.environ.setdefault(k, v)
warnings.filterwarnings("ignore")


def build() -> tuple[Any, Any]:
    """(turn coroutine, async cleanup)."""
    import aiosqlite
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.prebuilt import create_react_agent

    class ScriptedChatModel(BaseChatModel):
        """Follows ``step_of(agent, ...)`` by assistant turns since the last human."""

        agent: str

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
            return self

        def _decide(self, messages: list[BaseMessage]) -> ChatResult:
            turns = 0
            for m in reversed(messages):
                if m.type == "human":
                    break
                turns += m.type == "ai"
            kind, payload = step_of(self.agent, turns)
            if kind == "call":
                name, args = payload
                msg = AIMessage(
                    content="",
                    tool_calls=[{"name": name, "args": dict(args), "id": f"call_{turns}"}],
                )
            else:
                msg = AIMessage(content=payload)
            return ChatResult(generations=[ChatGeneration(message=msg)])

        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            return self._decide(messages)

        async def _agenerate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            return self._decide(messages)

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return add_impl(a, b)

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return multiply_impl(a, b)

    research_graph = create_react_agent(ScriptedChatModel(agent="researcher"), [add])
    write_graph = create_react_agent(ScriptedChatModel(agent="writer"), [multiply])

    @tool
    async def researcher(request: str, config: RunnableConfig) -> str:
        """Ask the researcher."""
        out = await research_graph.ainvoke({"messages": [("user", request)]}, config)
        return out["messages"][-1].content

    @tool
    async def writer(request: str, config: RunnableConfig) -> str:
        """Ask the writer."""
        out = await write_graph.ainvoke({"messages": [("user", request)]}, config)
        return out["messages"][-1].content

    db = Path(tempfile.mkdtemp(prefix="lg-supervisor-")) / "checkpoints.db"
    state: dict[str, Any] = {}

    async def turn(thread_id: str) -> str:
        agent = state.get("agent")
        if agent is None:
            conn = await aiosqlite.connect(str(db))
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
            state["conn"] = conn
            agent = state["agent"] = create_react_agent(
                ScriptedChatModel(agent="supervisor"), [researcher, writer], checkpointer=saver
            )
        out = await agent.ainvoke(
            {"messages": [("user", PROMPT)]}, {"configurable": {"thread_id": thread_id}}
        )
        msgs = out["messages"]
        kinds = [m.type for m in msgs]
        assert kinds == ["human", "ai", "tool", "ai", "tool", "ai"], kinds
        assert [m.content for m in msgs if m.type == "tool"] == [ANSWER, ANSWER]
        return msgs[-1].content

    async def cleanup() -> None:
        if "conn" in state:
            await state["conn"].close()

    return turn, cleanup


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("langgraph", "langgraph-prebuilt", "langchain-core", "langgraph-checkpoint-sqlite"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


async def _main() -> None:
    try:
        turn, cleanup = build()
        assert await turn("selftest") == ANSWER
    except Exception as exc:
        print("@@" + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    print("@@" + json.dumps({"ready": True, "versions": _versions()}), flush=True)
    await serve(turn)
    await cleanup()


if __name__ == "__main__":
    asyncio.run(_main())
