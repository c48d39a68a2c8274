"""LangGraph / CrewAI side of the agent-overhead benchmark (runs in ``.venv-bench``).

``agent_overhead.py`` (main venv) starts this script with ``.venv-bench/bin/python``
once per framework and reads one JSON object from the last line of stdout. It is
kept out of the product's environment on purpose: these frameworks are only
baselines.

Each framework runs the same agent as lumos_ray: its own fake chat model (a
subclass of the framework's model base class, so calls go through the framework's
normal callback/event machinery) whose decision is ``_harness.scripted_decision``,
and one tool ``add(a, b)``; one turn = model call -> tool call -> final answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import TOOL_ARGS, measure, scripted_decision, serve

# Offline and quiet: no telemetry, no tracing uploads, no prompts.
for k, v in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "OTEL_SDK_DISABLED": "true",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "OPENAI_API_KEY": "sk-unused",
}.items():
    os.environ.setdefault(k, v)
warnings.filterwarnings("ignore")


# --------------------------------------------------------------------------- LangGraph
def _langgraph_turn(checkpointer: str) -> tuple[Any, Any]:
    """(turn coroutine factory, async cleanup) for ``create_react_agent``."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    class ScriptedChatModel(BaseChatModel):
        """LangChain chat model driven by the shared scripted decision."""

        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
            return self

        def _decide(self, messages: list[BaseMessage]) -> ChatResult:
            last = messages[-1]
            kind, payload = scripted_decision(last.type, last.content)
            if kind == "call":
                msg = AIMessage(
                    content="",
                    tool_calls=[
                        {"name": "add", "args": dict(payload), "id": f"call_{len(messages)}"}
                    ],
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
        return a + b

    cleanup = None
    if checkpointer == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        saver: Any = InMemorySaver()
    elif checkpointer == "sqlite":
        import tempfile

        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        db = Path(tempfile.mkdtemp(prefix="lg-bench-")) / "checkpoints.db"
        conn_holder: dict[str, Any] = {}

        async def make() -> Any:
            conn = await aiosqlite.connect(str(db))
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            conn_holder["c"] = conn
            s = AsyncSqliteSaver(conn)
            await s.setup()
            return s

        saver = make  # resolved inside the event loop below

        async def _close() -> None:
            await conn_holder["c"].close()

        cleanup = _close
    else:
        saver = None

    state: dict[str, Any] = {}

    async def turn(thread_id: str) -> str:
        agent = state.get("agent")
        if agent is None:
            s = await saver() if callable(saver) else saver
            agent = state["agent"] = create_react_agent(ScriptedChatModel(), [add], checkpointer=s)
        out = await agent.ainvoke(
            {"messages": [("user", "What is 1 + 2?")]},
            {"configurable": {"thread_id": thread_id}},
        )
        msgs = out["messages"]
        assert [m.type for m in msgs] == ["human", "ai", "tool", "ai"], [m.type for m in msgs]
        return msgs[-1].content

    return turn, cleanup


# ----------------------------------------------------------------------------- CrewAI
def _crewai_turn() -> tuple[Any, Any]:
    from crewai import Agent, BaseLLM, Crew, Process, Task
    from crewai.tools import tool

    class ScriptedLLM(BaseLLM):
        """CrewAI custom LLM (native function calling) driven by the shared decision."""

        def call(
            self,
            messages: Any,
            tools: list[dict] | None = None,
            callbacks: list[Any] | None = None,
            available_functions: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            if isinstance(messages, str):
                messages = [{"role": "user", "content": messages}]
            last = messages[-1]
            kind, payload = scripted_decision(last.get("role", "user"), last.get("content"))
            if kind == "call":
                if available_functions and "add" in available_functions:
                    # CrewAI asks the LLM to run the function itself in this mode.
                    return str(available_functions["add"](**payload))
                return [
                    {
                        "id": f"call_{len(messages)}",
                        "type": "function",
                        "function": {"name": "add", "arguments": json.dumps(payload)},
                    }
                ]
            return payload

        async def acall(
            self,
            messages: Any,
            tools: Any = None,
            callbacks: Any = None,
            available_functions: Any = None,
            **kwargs: Any,
        ) -> Any:
            return self.call(messages, tools, callbacks, available_functions, **kwargs)

        def supports_function_calling(self) -> bool:
            return True

        def supports_stop_words(self) -> bool:
            return False

        def get_context_window_size(self) -> int:
            return 128_000

    @tool("add")
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent = Agent(
        role="Calculator",
        goal="Answer arithmetic questions using the add tool",
        backstory="You add numbers.",
        llm=ScriptedLLM(model="scripted"),
        tools=[add],
        verbose=False,
        allow_delegation=False,
        max_iter=5,
        cache=False,
    )
    task = Task(description="What is {a} + {b}?", expected_output="The sum", agent=agent)
    crew = Crew(
        agents=[agent], tasks=[task], process=Process.sequential, verbose=False, memory=False
    )

    async def turn(thread_id: str) -> str:
        # A Crew is not safe to run concurrently: CrewAI's own kickoff_for_each
        # copies it per input, so we do the same (and count it).
        out = await crew.copy().akickoff(inputs=dict(TOOL_ARGS))
        return out.raw

    return turn, None


def _build(framework: str) -> tuple[Any, Any]:
    if framework.startswith("langgraph"):
        return _langgraph_turn(framework.partition(":")[2] or "none")
    if framework == "crewai":
        return _crewai_turn()
    raise SystemExit(f"unknown framework {framework}")


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    turn, cleanup = _build(args.framework)
    results = []
    for n in args.concurrency:
        results.append(await measure(turn, n, reps=args.reps, target_rep_s=args.target_rep_s))
    if cleanup is not None:
        await cleanup()
    return {"framework": args.framework, "results": results, "versions": _versions()}


async def _serve_main(framework: str) -> None:
    """Driven rep by rep by agent_overhead.py (see _harness.serve)."""
    try:
        turn, cleanup = _build(framework)
    except Exception as exc:
        print("@@" + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    print("@@" + json.dumps({"ready": True, "versions": _versions()}), flush=True)
    await serve(turn)
    if cleanup is not None:
        await cleanup()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("langgraph", "langchain-core", "langgraph-checkpoint-sqlite", "crewai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--framework", required=True, help="langgraph[:memory|:sqlite] or crewai")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--target-rep-s", type=float, default=0.8)
    p.add_argument("--serve", action="store_true", help="line protocol on stdin/stdout")
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve_main(args.framework))
        return
    t0 = time.perf_counter()
    try:
        res = asyncio.run(_main(args))
    except Exception as exc:  # report, don't hide: the caller prints it in the table
        res = {
            "framework": args.framework,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-3000:],
        }
    res["elapsed_s"] = time.perf_counter() - t0
    print(json.dumps(res))


if __name__ == "__main__":
    main()
