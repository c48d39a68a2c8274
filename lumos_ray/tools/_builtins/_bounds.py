"""Bounds shared by the built-in tools: regular expressions with a time budget and
the size of a value once its shared parts (YAML aliases) are expanded.

A caller's regex runs on the ``regex`` engine, which can stop a match after a
timeout; Python's ``re`` cannot be interrupted once a catastrophic backtrack starts
(and it holds the GIL, stalling every session of the actor while it runs). One
:class:`RegexBudget` covers every match of one tool call, so many small matches
cannot add up to an unbounded call either. The ``regex`` engine measures its
timeout in CPU seconds of the matching thread (on a loaded machine the wall-clock
time is longer), and matches with ``concurrent=True`` so the GIL is released and
other sessions of the same actor keep running meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

import regex

from lumos_ray.errors import ToolError, ToolNotAllowedError

__all__ = ["MAX_PATTERN_CHARS", "RegexBudget", "expanded_size"]

#: Deepest nesting of data a tool converts (recursion stays far from Python's limit).
_MAX_DEPTH = 200
#: Longest regular expression a caller may send.
MAX_PATTERN_CHARS = 1000


class RegexBudget:
    """Compile and match caller regexes within ``seconds`` in total for one call."""

    def __init__(self, seconds: float, what: str = "the regular expression") -> None:
        self.seconds = seconds
        self.what = what
        self._deadline = time.monotonic() + seconds

    def compile(self, pattern: str, flags: int = 0) -> Any:
        """The compiled pattern; a clear error for one too long or invalid."""
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ToolNotAllowedError(
                f"{self.what} is {len(pattern)} characters long; the limit is "
                f"{MAX_PATTERN_CHARS}. Use a shorter pattern."
            )
        try:
            return regex.compile(pattern, flags)
        except (regex.error, ValueError, TypeError) as exc:
            raise ToolError(f"invalid regular expression {pattern[:100]!r}: {exc}") from None

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._over()
        return left

    def _over(self) -> ToolNotAllowedError:
        return ToolNotAllowedError(
            f"{self.what} took longer than {self.seconds:g} s to match and was stopped "
            "(catastrophic backtracking?). Use a simpler pattern, e.g. without nested "
            "repetition such as (a+)+."
        )

    def search(self, compiled: Any, text: str) -> Any:
        """``compiled.search(text)``, stopped when the call's budget is spent."""
        try:
            return compiled.search(text, concurrent=True, timeout=self._remaining())
        except TimeoutError:
            raise self._over() from None

    def finditer(self, compiled: Any, text: str) -> Any:
        """``compiled.finditer(text)``; the iterator stops when the budget is spent."""
        try:
            yield from compiled.finditer(text, concurrent=True, timeout=self._remaining())
        except TimeoutError:
            raise self._over() from None


def expanded_size(value: Any, limit: int) -> int:
    """How many scalars and containers ``value`` has once shared sub-objects are
    counted every time they appear (as JSON would write them).

    Linear in the number of distinct objects (sizes are memoised per object), so a
    "billion laughs" YAML document is measured without being expanded. Raises
    ToolNotAllowedError past ``limit`` and for self-referencing values.
    """
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any, depth: int = 0) -> int:
        if not isinstance(v, dict | list | tuple):
            return 1
        if depth > _MAX_DEPTH:
            raise ToolNotAllowedError(f"the data is nested more than {_MAX_DEPTH} levels deep")
        key = id(v)
        if key in memo:
            return memo[key]
        if key in active:
            raise ToolNotAllowedError(
                "the data refers to itself (a recursive YAML alias); it cannot be converted"
            )
        active.add(key)
        items = v.items() if isinstance(v, dict) else ((None, x) for x in v)
        total = 1
        for k, x in items:
            total += size(k, depth + 1) if k is not None else 0
            total += size(x, depth + 1)
            if total > limit:
                raise ToolNotAllowedError(
                    f"the data expands to more than {limit} values (YAML aliases repeat "
                    "shared parts); refusing to convert it. Send the data without "
                    "aliases, or a smaller document."
                )
        active.discard(key)
        memo[key] = total
        return total

    return size(value)
