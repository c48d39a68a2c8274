"""Teacher transcripts through real agent runs, written as a chat-with-tools JSONL.

A teacher agent (the :class:`TeacherModel`, the built-in ``calculator`` and
``date_diff`` tools, the demo instructions) is deployed as a real agent actor; each
generated task is one turn on its own thread: the agent loop asks the teacher, runs the
real tool, asks again, and stores the thread. The rows are read back from the agent's
stored threads, in OpenAI's fine-tuning shape (``messages`` with ``tool_calls`` and
``tool`` results, plus the ``tools`` offered), which the fine-tuning loader renders
with the model's chat template.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from lumos_ray.models._tasks import DEMO_INSTRUCTIONS, DEMO_TOOLS, ToolTask
from lumos_ray.models._teacher import TeacherModel

__all__ = ["thread_to_row", "write_teacher_transcripts"]

#: Turns in flight at once: enough to keep the agent actor busy, few enough that a
#: small machine is not flooded.
_IN_FLIGHT = 64
_MAX_TASKS = 100_000


def thread_to_row(
    history: list[dict[str, Any]], instructions: str, tools: list[dict[str, Any]]
) -> dict[str, Any]:
    """One stored thread as an OpenAI chat-with-tools fine-tuning row."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}]
    for m in history:
        role = m.get("role")
        if role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": m.get("content")}
            if m.get("tool_calls"):
                msg["tool_calls"] = [
                    {
                        "id": tc.get("id"),
                        "type": "function",
                        "function": {
                            "name": tc["function"]["name"],
                            "arguments": tc["function"]["arguments"],
                        },
                    }
                    for tc in m["tool_calls"]
                ]
            messages.append(msg)
        elif role == "tool":
            messages.append(
                {"role": "tool", "tool_call_id": m.get("tool_call_id"), "content": m["content"]}
            )
        elif role == "user":
            messages.append({"role": "user", "content": m["content"]})
    return {"messages": messages, "tools": tools}


async def _run_all(tasks: list[ToolTask], name: str) -> list[dict[str, Any]]:
    from lumos_ray.actors.agent import Agent
    from lumos_ray.models._tools_base import tool_specs

    agent = Agent(
        name=name,
        instructions=DEMO_INSTRUCTIONS,
        model=TeacherModel(tasks),
        tools=list(DEMO_TOOLS),
        max_steps=3,
    )
    handle = agent.deploy()
    specs = tool_specs(DEMO_TOOLS)
    sem = asyncio.Semaphore(_IN_FLIGHT)

    async def one(task: ToolTask) -> dict[str, Any]:
        async with sem:
            thread = uuid.uuid4().hex
            await handle.run(task.prompt, thread_id=thread)
            history = await handle.history(thread)
        return thread_to_row(history, DEMO_INSTRUCTIONS, specs)

    try:
        return list(await asyncio.gather(*(one(t) for t in tasks)))
    finally:
        await handle.shutdown()


def write_teacher_transcripts(
    tasks: list[ToolTask], path: str | Path, *, agent_name: str | None = None
) -> Path:
    """Act every task out through a teacher agent; write one JSONL row per task.

    Needs a Ray connection (``lumos_ray.runtime.connect``). Rows keep the tasks' order.
    """
    if not tasks or len(tasks) > _MAX_TASKS:
        raise ValueError(f"between 1 and {_MAX_TASKS:,} tasks, got {len(tasks)}")
    name = agent_name or f"lumos-teacher-{uuid.uuid4().hex[:8]}"
    rows = asyncio.run(_run_all(tasks, name))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return out
