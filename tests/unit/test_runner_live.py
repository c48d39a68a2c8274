"""The runner's in-memory view of a run it executes (``_Live``): followers read the
committed events from it, with the store's sequence numbers, and fall back to the
store for what it no longer (or not yet) holds. No cluster needed."""

from __future__ import annotations

import asyncio

from lumos_ray.workflows import _runner
from lumos_ray.workflows._runner import _Live


def _ev(seq: int) -> dict:
    return {"seq": seq, "ts": 0.0, "type": "e", "data": {}}


def test_followers_read_committed_events_by_seq() -> None:
    async def go() -> None:
        live = _Live({"status": "running"}, base=0)
        woken = live.changed
        live.publish((_ev(1), _ev(2)), {})
        assert woken.is_set() and not live.changed.is_set()  # a fresh event per change
        live.publish((_ev(3),), {"status": "succeeded"})
        assert [e["seq"] for e in live.after(0)] == [1, 2, 3]
        assert [e["seq"] for e in live.after(2)] == [3]
        assert live.after(3) == []
        assert live.row["status"] == "succeeded"

    asyncio.run(go())


def test_resumed_run_learns_its_base_and_memory_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(_runner, "_KEEP_EVENTS", 3)

    async def go() -> None:
        live = _Live({"status": "running"}, base=None)  # resumed: numbering unknown
        live.publish((_ev(8), _ev(9)), {})
        assert live.base == 7  # seq <= 7: history, read from the store
        live.publish((_ev(10), _ev(11)), {})
        assert live.base == 8 and [e["seq"] for e in live.events] == [9, 10, 11]
        live.trim(1)  # what an ended run keeps
        assert live.base == 10 and live.after(0) == [_ev(11)]

    asyncio.run(go())
