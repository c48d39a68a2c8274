"""Concurrent input on one thread ("double texting"): what a second input does while
the thread's turn is still running.

Four strategies, chosen per agent (``Agent.concurrent_input``) or per call:

- ``reject``: the new input fails at once with :class:`~lumos_ray.errors.ThreadBusyError`;
  the running turn goes on.
- ``enqueue`` (default): the new input waits, then runs on the history the first turn
  left (turns of a thread are serialised, first come first served).
- ``interrupt``: the running turn is cancelled; the messages it had produced so far are
  kept in the history, closed off so the conversation stays well-formed (a tool message
  for every tool call that had not finished, then a system message saying the turn was
  interrupted); the new input then runs on that history.
- ``rollback``: the running turn is cancelled and nothing of it is kept (not in memory,
  not in the store); the new input runs on the history as it was before.

The cancelled turn's caller gets :class:`~lumos_ray.errors.TurnInterruptedError`. A turn
that has finished its model loop and started saving its messages is past its commit
point: it is not cancelled any more, the new input just runs after it.

Tools are not transactions. A tool running when its turn is cancelled gets the
cancellation at its next ``await`` (async tools); a sync tool already running in a
worker thread, or a tool running as a Ray task, runs to its end and its result is
dropped. Either way its side effects are neither undone nor hidden: the cancelled
caller's error lists ``tools_started`` and ``tools_unfinished``, the actor logs them, and
with ``interrupt`` the history tells the model that those calls' outcome is unknown.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from lumos_ray.actors._agent_loop import tool_message
from lumos_ray.errors import InputValidationError, ThreadBusyError, TurnInterruptedError

__all__ = [
    "STRATEGIES",
    "ConcurrentInput",
    "ThreadGate",
    "Turn",
    "check_strategy",
    "close_interrupted",
    "interrupted_error",
    "tool_calls_of",
]

log = logging.getLogger(__name__)

ConcurrentInput = Literal["reject", "enqueue", "interrupt", "rollback"]
STRATEGIES: tuple[str, ...] = get_args(ConcurrentInput)

#: Content of the tool message that closes a tool call cut short by an interrupt.
INTERRUPTED_TOOL = (
    "Error: interrupted before this tool call finished (a newer input arrived); whether "
    "it took effect is unknown."
)
#: The system message that marks the end of an interrupted turn in the history.
INTERRUPTED_MARK = (
    "[interrupted] This turn was cut short by a newer input on the thread; the messages "
    "above are what it had done so far."
)


def check_strategy(value: Any) -> ConcurrentInput:
    """``value`` if it names a strategy, else a clear error (it may come from HTTP/YAML)."""
    if value not in STRATEGIES:
        raise InputValidationError(
            f"concurrent_input must be one of {', '.join(STRATEGIES)}; got {value!r}.",
            fix="Pass concurrent_input='reject', 'enqueue', 'interrupt' or 'rollback' "
            "(or leave it unset for the agent's own setting).",
        )
    return value


@dataclass
class Turn:
    """The turn running on a thread: its task, the messages it has produced so far
    (``transcript``, appended to by the loop as it goes) and how it ended."""

    task: asyncio.Task[Any] | None = None
    transcript: list[dict[str, Any]] = field(default_factory=list)
    committing: bool = False  # past the commit point: never cancelled by new input
    cancelled_by: str | None = None  # 'interrupt' | 'rollback' once a newer input cancels it


class ThreadGate:
    """One thread's turn order: a FIFO lock, the turn holding it, and how many inputs
    hold or wait for it (``inflight``: the lock alone looks free for a moment between
    one turn's release and the next waiter's start)."""

    __slots__ = ("current", "inflight", "lock")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.current: Turn | None = None
        self.inflight = 0

    def admit(self, strategy: ConcurrentInput, agent: str, thread_id: str) -> None:
        """Apply ``strategy`` to a new input, synchronously (before any ``await``, so
        inputs are judged in the order they reached the actor)."""
        if self.inflight == 0 or strategy == "enqueue":
            return
        if strategy == "reject":
            raise ThreadBusyError(
                f"thread {thread_id!r} of agent {agent!r} is busy with another turn.",
                thread_id=thread_id,
                agent=agent,
            )
        cur = self.current
        if cur is None or cur.task is None or cur.committing or cur.cancelled_by is not None:
            return  # nothing cancellable: the new input just waits its turn
        cur.cancelled_by = strategy
        cur.task.cancel()


def tool_calls_of(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(names of every tool call in ``messages``, the calls without a tool result)."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    started: list[str] = []
    open_calls: list[dict[str, Any]] = []
    for m in messages:
        for c in m.get("tool_calls") or []:
            started.append(c.get("function", {}).get("name", "?"))
            if c.get("id") not in answered:
                open_calls.append(c)
    return started, open_calls


def close_interrupted(partial: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages an interrupted turn leaves in history: what it had produced, a tool
    message for each call that had not finished (a tool call without its result is an
    invalid conversation for chat APIs) and the interrupted mark."""
    _, open_calls = tool_calls_of(partial)
    closing = [tool_message(c.get("id"), INTERRUPTED_TOOL, False) for c in open_calls]
    return [*partial, *closing, {"role": "system", "content": INTERRUPTED_MARK}]


def interrupted_error(
    strategy: str, agent: str, thread_id: str, partial: list[dict[str, Any]], kept: int
) -> TurnInterruptedError:
    """The cancelled caller's error, naming every tool the turn had started."""
    started, open_calls = tool_calls_of(partial)
    unfinished = [c.get("function", {}).get("name", "?") for c in open_calls]
    what = (
        f"its {kept} messages so far were kept in the history, marked interrupted"
        if strategy == "interrupt"
        else "none of its messages were kept"
    )
    tools = (
        f" Tools it had started ({', '.join(started)}) were not undone"
        + (f"; {', '.join(unfinished)} had not finished (outcome unknown)." if unfinished else ".")
        if started
        else ""
    )
    if started:
        log.warning(
            "agent %s thread %s: turn cancelled by %s with tools started %s (unfinished %s)",
            agent,
            thread_id,
            strategy,
            started,
            unfinished,
        )
    return TurnInterruptedError(
        f"turn on thread {thread_id!r} of agent {agent!r} was cancelled by a newer input "
        f"(strategy {strategy!r}): {what}.{tools}",
        strategy=strategy,
        thread_id=thread_id,
        kept_messages=kept,
        tools_started=started,
        tools_unfinished=unfinished,
    )
