"""What a write to the run store is made of, and the checks every write path shares.

Its own module, below both writers: :class:`~lumos_ray.store.RunStore` and the group
commit (``_batch``, the runner's write path, which ``RunStore.save_many`` also uses)
check keys and events the same way and take the same write types, and neither may
import the other's module at import time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lumos_ray.errors import InputValidationError
from lumos_ray.store._schema import KEY_LIMITS

__all__ = ["MAX_BATCH", "CheckpointWrite", "Event", "ThreadMessages"]

#: Most items one batched write takes.
MAX_BATCH = 10_000
# Columns set_status may change besides status (never the key or created_at).
_RUN_FIELDS = frozenset(
    {"workflow", "version", "input", "output", "error", "suspended", "trace", "owner", "heartbeat"}
)

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class ThreadMessages:
    """An agent turn's new messages, appended to its thread (``turn_id`` marks the
    turn's first message, as :meth:`RunStore.append_messages_many` does)."""

    agent: str
    thread_id: str
    messages: Sequence[dict[str, Any]]
    turn_id: str | None = None


@dataclass(frozen=True)
class CheckpointWrite:
    """One run's part of a group commit (:meth:`RunStore.save_many`): a finished step's
    checkpoint (``path``, ``output``) and the events emitted before it. ``path=None``
    writes only the events. ``thread``: the step's agent turn, saved in the same
    transaction as its checkpoint (and only if the checkpoint is: a step that already
    had one keeps its first turn too)."""

    run_id: str
    path: str | None = None
    output: Any = None
    events: Sequence[Event] = field(default_factory=tuple)
    thread: ThreadMessages | None = None


def _check(kind: str, value: Any) -> str:
    """A key value: a non-empty string within its column's length."""
    limit = KEY_LIMITS[kind]
    if not isinstance(value, str) or not value or len(value) > limit:
        shown = repr(value)[:80]
        raise InputValidationError(
            f"Invalid {kind} {shown}: must be a non-empty string of at most {limit} characters.",
            fix=f"Pass a shorter (or non-empty) {kind}.",
        )
    if "\x00" in value:  # PostgreSQL text cannot hold it; refused on every backend alike
        raise InputValidationError(
            f"Invalid {kind} {repr(value)[:80]}: it contains a NUL character.",
            fix=f"Remove the NUL (\\x00) from the {kind}.",
        )
    return value


def _check_events(items: Iterable[Event]) -> list[Event]:
    out = list(items)
    if len(out) > MAX_BATCH:
        raise InputValidationError(
            f"{len(out)} events in one write (at most {MAX_BATCH}).",
            fix="Write events in smaller batches.",
        )
    for item in out:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise InputValidationError(
                f"Invalid event {item!r:.80}: expected a (type, data) pair.",
                fix="Pass events as [(type, {...}), ...].",
            )
        _check("event_type", item[0])
    return out
