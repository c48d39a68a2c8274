"""Your project's Python steps and tools (importable as `tools` from the project dir)."""

from __future__ import annotations

from typing import Any

from lumos_ray import tool


def summarise(state: dict[str, Any]) -> str:
    """A function step: receives the workflow state, returns this step's output."""
    return f"facts: {state['facts']!s:.80} | risks: {state['risks']!s:.80}"


@tool
def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count.
    """
    return len(text.split())
