"""Module-level functions and tools that workflow definitions reference by import path."""

from __future__ import annotations

from typing import Any

from lumos_ray.tools import tool


def double(x: int) -> int:
    return 2 * x


@tool
def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: What to shout.
    """
    return text.upper()


def decide(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    return "ok"
