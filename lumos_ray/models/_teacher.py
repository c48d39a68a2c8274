"""The teacher: a deterministic chat model that acts out generated tool tasks.

Why a teacher model instead of writing transcripts directly: the demo model is taught
on what real agent runs record. The teacher only decides (the right call for a known
prompt, then the answer from the tool's real result); the agent loop, the real tools
and the store do everything else, exactly as for a served model, so the transcripts
carry what production transcripts carry (tool-call ids, the tool's JSON output).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from lumos_ray.actors.models import ChatModel, ModelResponse, ToolCall
from lumos_ray.errors import ModelError
from lumos_ray.models._tasks import ToolTask, answer_for

__all__ = ["TeacherModel"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class TeacherModel(ChatModel):
    """Calls the task's tool for a known prompt, then answers with the tool's result."""

    name = "lumos-teacher"

    def __init__(self, tasks: Iterable[ToolTask]) -> None:
        self.tasks = {t.prompt: t for t in tasks}

    async def chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> ModelResponse:
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        task = self.tasks.get(_text(messages[last_user]["content"])) if last_user >= 0 else None
        if task is None:
            raise ModelError(
                "the teacher model only answers the generated tasks it was given",
                fix="Give TeacherModel the tasks whose prompts the agent is sent.",
            )
        offered = {(t.get("function") or {}).get("name") for t in tools or []}
        if task.tool not in offered:
            raise ModelError(
                f"the teacher needs tool {task.tool!r}, which the agent does not offer",
                fix=f"Add {task.tool!r} to the agent's tools.",
            )
        results = [m for m in messages[last_user + 1 :] if m.get("role") == "tool"]
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if not results:
            call = ToolCall(f"call_{turn}_0", task.tool, json.dumps(task.arguments))
            return ModelResponse(tool_calls=[call], finish_reason="tool_calls", model=self.name)
        raw = _text(results[-1].get("content"))
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        return ModelResponse(content=answer_for(task, value), finish_reason="stop", model=self.name)
