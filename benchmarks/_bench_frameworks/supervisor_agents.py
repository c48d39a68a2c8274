"""The agents of ``benchmarks/supervisor.py``: a supervisor and two sub-agents.

Pure standard library, imported by both venvs (lumos_ray's, and ``.venv-bench`` for
LangGraph), so both frameworks run the very same scripts and tool bodies. One run:

1. supervisor -> asks ``researcher`` ("add 1 and 2")
   researcher -> ``add(a=1, b=2)`` -> answers ``"3"``
2. supervisor -> asks ``writer`` ("multiply 3 by 1")
   writer -> ``multiply(a=3, b=1)`` -> answers ``"3"``
3. supervisor -> answers ``"3"``

7 model calls, 2 tool calls, 2 sub-agent invocations. Each agent's decision depends
only on how many assistant turns its conversation has (since the last user message),
so concurrent runs cannot interfere.
"""

from __future__ import annotations

from typing import Any

from durable_agent import add_impl, multiply_impl

__all__ = ["ANSWER", "PROMPT", "SCRIPTS", "add_impl", "multiply_impl", "step_of"]

PROMPT = "Compute (1 + 2) * 1 with your team."
ANSWER = "3"
#: agent -> the calls of its first model calls (tool name, arguments), then ANSWER.
SCRIPTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "supervisor": [
        ("researcher", {"request": "add 1 and 2"}),
        ("writer", {"request": "multiply 3 by 1"}),
    ],
    "researcher": [("add", {"a": 1, "b": 2})],
    "writer": [("multiply", {"a": 3, "b": 1})],
}


def step_of(agent: str, assistant_turns: int) -> tuple[str, Any]:
    """``("call", (name, args))`` while the agent's script lasts, then
    ``("answer", ANSWER)``."""
    script = SCRIPTS[agent]
    if assistant_turns < len(script):
        return ("call", script[assistant_turns])
    return ("answer", ANSWER)
