"""The agent of ``benchmarks/durable_path.py``: 3 model calls + 2 tool calls per run.

Pure standard library, imported by both venvs (the main one for lumos_ray, and
``.venv-bench`` for LangGraph), so both frameworks run the very same script and the
very same tool bodies:

1. model -> ``add(a=1, b=2)``          (tool call 1: returns 3)
2. model -> ``multiply(a=3, b=1)``     (tool call 2: returns 3)
3. model -> answers ``"3"``

The model's decision depends only on how many assistant turns the conversation
already has (after the last user message), like ``lumos_ray.testing.ScriptedModel``,
so concurrent runs cannot interfere.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ANSWER", "PROMPT", "SCRIPT", "add_impl", "multiply_impl", "scripted_step"]

PROMPT = "What is (1 + 2) * 1?"
ANSWER = "3"
# (tool name, arguments) for the first two model calls, then the answer.
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("add", {"a": 1, "b": 2}),
    ("multiply", {"a": 3, "b": 1}),
]


def add_impl(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def multiply_impl(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def scripted_step(assistant_turns: int) -> tuple[str, Any]:
    """``("call", (name, args))`` for the first two model calls, then ``("answer", text)``."""
    if assistant_turns < len(SCRIPT):
        return ("call", SCRIPT[assistant_turns])
    return ("answer", ANSWER)
