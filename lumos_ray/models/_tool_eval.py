"""Score a served model on generated tool tasks, through its OpenAI-compatible API.

Two turns per task, as an agent runs them: (1) the prompt with the tools offered; the
model's first reply must be exactly one call of the right tool whose parsed arguments
equal the task's (vLLM's tool parser turns the model's text into ``tool_calls``, so
this also checks the format); (2) the real tool's result is sent back; the reply must
state the result as a whole number (``answer_names_result``, the demo's check too:
"120" does not count for 12). Turn 2 is scored for every task (with the correct call in the
history), so the two rates are independent measurements.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from lumos_ray.models._tasks import DEMO_INSTRUCTIONS, DEMO_TOOLS, ToolTask, answer_names_result

__all__ = ["ToolEvalReport", "evaluate_tool_calls"]

_MAX_TASKS = 5_000


@dataclass
class ToolEvalReport:
    """Rates over the tasks, plus the first few failures for a human to read."""

    model: str
    tasks: int
    call_ok: int = 0  # right tool, exact arguments
    format_ok: int = 0  # any parsed tool call at all
    tool_ok: int = 0  # right tool name
    answer_ok: int = 0  # second turn contains the tool's result
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [ok, n]
    answer_by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [ok, n]
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def call_accuracy(self) -> float:
        return self.call_ok / max(self.tasks, 1)

    @property
    def answer_accuracy(self) -> float:
        return self.answer_ok / max(self.tasks, 1)

    def as_dict(self) -> dict[str, Any]:
        n = max(self.tasks, 1)
        return {
            "model": self.model,
            "tasks": self.tasks,
            "call_accuracy": self.call_ok / n,
            "tool_name_accuracy": self.tool_ok / n,
            "format_accuracy": self.format_ok / n,
            "answer_accuracy": self.answer_ok / n,
            "by_kind": {k: v[0] / max(v[1], 1) for k, v in sorted(self.by_kind.items())},
            "answer_by_kind": {
                k: v[0] / max(v[1], 1) for k, v in sorted(self.answer_by_kind.items())
            },
            "failures": self.failures[:8],
        }


async def _tool_result(task: ToolTask) -> Any:
    from lumos_ray.tools import get_tool

    return await get_tool(task.tool).acall(task.arguments)


async def _one(
    client: Any, model: str, task: ToolTask, specs: list[dict[str, Any]], rep: ToolEvalReport
) -> None:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": DEMO_INSTRUCTIONS},
        {"role": "user", "content": task.prompt},
    ]
    body = {"model": model, "messages": msgs, "tools": specs, "max_tokens": 64, "temperature": 0}
    r = await client.post("/chat/completions", json=body)
    r.raise_for_status()
    msg = r.json()["choices"][0]["message"]
    calls = msg.get("tool_calls") or []
    ok = False
    if calls:
        rep.format_ok += 1
        fn = calls[0]["function"]
        if fn["name"] == task.tool:
            rep.tool_ok += 1
            try:
                args = json.loads(fn["arguments"])
            except ValueError:
                args = None
            ok = len(calls) == 1 and args == task.arguments
    rep.call_ok += ok
    tally = rep.by_kind.setdefault(task.kind, [0, 0])
    tally[0] += ok
    tally[1] += 1
    if not ok and len(rep.failures) < 8:
        rep.failures.append({"prompt": task.prompt, "want": task.arguments, "got": msg})

    result = await _tool_result(task)
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": task.tool, "arguments": json.dumps(task.arguments)},
    }
    msgs2 = [
        *msgs,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": json.dumps(result)},
    ]
    r = await client.post("/chat/completions", json={**body, "messages": msgs2})
    r.raise_for_status()
    text = r.json()["choices"][0]["message"].get("content") or ""
    said = answer_names_result(text, result)
    rep.answer_ok += said
    tally = rep.answer_by_kind.setdefault(task.kind, [0, 0])
    tally[0] += said
    tally[1] += 1


async def evaluate_tool_calls(
    base_url: str,
    model: str,
    tasks: list[ToolTask],
    *,
    api_key: str | None = None,
    concurrency: int = 16,
) -> ToolEvalReport:
    """Run every task against ``base_url`` (an OpenAI ``/v1``); returns the report."""
    import httpx

    from lumos_ray.models._tools_base import tool_specs

    if not tasks or len(tasks) > _MAX_TASKS:
        raise ValueError(f"between 1 and {_MAX_TASKS:,} tasks, got {len(tasks)}")
    specs = tool_specs(DEMO_TOOLS)
    rep = ToolEvalReport(model=model, tasks=len(tasks))
    sem = asyncio.Semaphore(max(1, concurrency))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=300) as client:

        async def run(t: ToolTask) -> None:
            async with sem:
                await _one(client, model, t, specs, rep)

        await asyncio.gather(*(run(t) for t in tasks))
    return rep
