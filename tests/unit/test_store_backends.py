"""The run store's behaviour, on SQLite and on a real PostgreSQL server.

Every test takes ``store_backend`` and runs once per backend (``--store-backend``
picks; see tests/_postgres.py for the server). Nothing here starts Ray.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from lumos_ray.errors import InputValidationError, NotFoundError
from lumos_ray.store import CheckpointWrite, RunStore, ThreadMessages

MakeStore = Callable[..., RunStore]


def _run(store: RunStore, run_id: str = "r1", **kw: Any) -> None:
    store.put_definition("workflow", "wf", "v1", {"name": "wf", "steps": []})
    store.create_run(run_id, "wf", "v1", kw.get("input", {"x": 1}))


def test_runs_create_get_list_status(store_backend: str, make_store: MakeStore) -> None:
    s = make_store()
    _run(s, "r1", input={"q": "é", "n": [1, 2.5, None, True]})
    _run(s, "r2")
    row = s.get_run("r1")
    assert row["status"] == "pending" and row["workflow"] == "wf" and row["version"] == "v1"
    assert row["input"] == {"q": "é", "n": [1, 2.5, None, True]}
    assert row["tenant_id"] == "default" and row["owner"] is None
    with pytest.raises(IntegrityError):  # the runner relies on this for retried starts
        s.create_run("r1", "wf", "v1", {})
    s.set_status("r1", "succeeded", output={"answer": 42}, error=None)
    row = s.get_run("r1")
    assert row["status"] == "succeeded" and row["output"] == {"answer": 42}
    assert row["updated_at"] >= row["created_at"]
    assert {r["id"] for r in s.list_runs()} == {"r1", "r2"}
    assert [r["id"] for r in s.list_runs(status="succeeded")] == ["r1"]
    assert len(s.list_runs(limit=1)) == 1
    with pytest.raises(NotFoundError, match="No run with id 'nope'"):
        s.get_run("nope")


def test_definitions_by_name_and_version(store_backend: str, make_store: MakeStore) -> None:
    s = make_store()
    assert s.put_definition("workflow", "wf", "v1", {"name": "wf", "n": 1}) is True
    assert s.put_definition("workflow", "wf", "v1", {"name": "wf", "n": 1}) is False  # no-op
    time.sleep(0.01)  # created_at orders "newest"
    assert s.put_definition("workflow", "wf", "v2", {"name": "wf", "n": 2}) is True
    assert s.get_definition("workflow", "wf", "v1")["body"] == {"name": "wf", "n": 1}
    assert s.get_definition("workflow", "wf")["version"] == "v2"  # newest
    assert [d["version"] for d in s.list_definitions("workflow", "wf")] == ["v2", "v1"]
    assert s.list_definitions("tool") == []
    with pytest.raises(NotFoundError, match=r"version 'v9' \(registered versions: v2, v1\)"):
        s.get_definition("workflow", "wf", "v9")
    with pytest.raises(NotFoundError, match="No registered workflow 'other'"):
        s.get_definition("workflow", "other")


def test_leases_claim_renew_stale(store_backend: str, make_store: MakeStore) -> None:
    s = make_store()
    _run(s, "r1")
    _run(s, "r2")
    assert s.claim("r1", "runner-a", stale_after_s=30)
    assert s.claim("r1", "runner-a", stale_after_s=30)  # ours already
    assert not s.claim("r1", "runner-b", stale_after_s=30)  # a live owner holds it
    assert not s.claim("missing", "runner-b", stale_after_s=30)
    assert s.get_run("r1")["owner"] == "runner-a"
    # r2 has never been claimed (no heartbeat): stale at once; r1 is fresh.
    assert s.stale_runs(30) == ["r2"]
    before = s.get_run("r1")["heartbeat"]
    time.sleep(0.02)
    s.renew("runner-a", ["r1", "r2"])
    assert s.get_run("r1")["heartbeat"] > before
    assert s.get_run("r2")["heartbeat"] is None  # not runner-a's: untouched
    s.renew("runner-a", [])
    # The owner goes quiet: with a zero staleness window its lease lapses.
    time.sleep(0.02)
    assert set(s.stale_runs(0)) == {"r1", "r2"}
    assert s.claim("r1", "runner-b", stale_after_s=0)
    assert s.get_run("r1")["owner"] == "runner-b"
    s.set_status("r1", "succeeded", owner=None)
    assert "r1" not in s.stale_runs(0)  # finished runs are never adopted


def test_checkpoint_and_pending_events_are_one_transaction(
    store_backend: str, make_store: MakeStore
) -> None:
    s = make_store()
    _run(s)
    s.save_checkpoint("r1", "0/a", {"out": 1}, [("step_started", {"step": "a"})])
    s.save_checkpoint("r1", "1/b", [1, "two"], None)
    assert s.load_checkpoints("r1") == {"0/a": {"out": 1}, "1/b": [1, "two"]}
    # A second checkpoint for a finished step fails, and takes its events with it.
    with pytest.raises(IntegrityError):
        s.save_checkpoint("r1", "0/a", {"out": 2}, [("should_vanish", {})])
    assert s.load_checkpoints("r1")["0/a"] == {"out": 1}
    assert [e["type"] for e in s.read_events("r1")] == ["step_started"]
    # A value that is not JSON fails before anything is written.
    with pytest.raises(InputValidationError, match="not storable JSON"):
        s.save_checkpoint("r1", "2/c", float("nan"), [("also_vanishes", {})])
    assert "2/c" not in s.load_checkpoints("r1")
    assert [e["type"] for e in s.read_events("r1")] == ["step_started"]
    assert s.load_checkpoints("other") == {}


def test_events_order_and_cursor(store_backend: str, make_store: MakeStore) -> None:
    s = make_store()
    _run(s)
    s.append_events("r1", [("a", {"i": 0}), ("b", {"i": 1})])
    s.append_events("r1", [])
    s.save_checkpoint("r1", "s", None, [("c", {"i": 2})])
    s.append_events("r1", [(f"e{i}", {"i": i + 3}) for i in range(20)])
    s.append_events("federated:x", [("round", {"n": 1})])  # events need no run row
    got = s.read_events("r1")
    assert [e["seq"] for e in got] == list(range(1, 24))
    assert [e["data"]["i"] for e in got] == list(range(23))
    assert [e["type"] for e in s.read_events("r1", after=2, limit=1)] == ["c"]
    assert [e["seq"] for e in s.read_events("r1", after=20)] == [21, 22, 23]
    assert s.read_events("r1", after=23) == []
    assert [e["seq"] for e in s.read_events("federated:x")] == [1]


def test_messages_and_working_memory(store_backend: str, make_store: MakeStore) -> None:
    s = make_store()
    s.append_messages_many(
        "agent", [("t1", [{"role": "user", "content": "hi"}]), ("t2", [{"role": "user"}])]
    )
    s.append_messages_many("agent", [("t1", [{"role": "assistant", "content": "yo"}]), ("t3", [])])
    s.append_messages_many("other-agent", [("t1", [{"role": "user", "content": "elsewhere"}])])
    got = s.load_messages_many("agent", ["t1", "t2", "t3"])
    assert [m.get("content") for m in got["t1"]] == ["hi", "yo"]
    assert got["t2"] == [{"role": "user"}] and got["t3"] == []
    assert s.load_messages_many("agent", []) == {}
    many = [f"t{i}" for i in range(1200)]  # more ids than one IN (...) clause takes
    assert set(s.load_messages_many("agent", many)) == set(many)
    # A turn id marks where its turn starts in the thread (a retried turn finds it).
    s.append_messages_many("agent", [("t1", [{"role": "user"}, {"role": "assistant"}], "tn")])
    msgs, turns = s.load_threads("agent", ["t1"])["t1"]
    assert len(msgs) == 4 and turns == {"tn": 2}
    with pytest.raises(InputValidationError, match="turn_id"):
        s.append_messages_many("agent", [("t1", [{"role": "user"}], "x" * 65)])

    assert s.load_working_memory("agent", "t1") == {}
    s.save_working_memory("agent", "t1", {"notes": ["a"], "n": 1})
    s.save_working_memory("agent", "t1", {"notes": ["a", "b"]})  # replaces
    assert s.load_working_memory("agent", "t1") == {"notes": ["a", "b"]}
    assert s.load_working_memory("agent", "t2") == {}
    with pytest.raises(InputValidationError, match="JSON object"):
        s.save_working_memory("agent", "t1", ["not", "a", "dict"])  # type: ignore[arg-type]


def test_save_many_group_commit(store_backend: str, make_store: MakeStore) -> None:
    s = make_store()
    for r in ("r1", "r2", "r3"):
        _run(s, r)
    s.save_checkpoint("r3", "0/a", "first", None)
    skipped = s.save_many(
        [
            CheckpointWrite("r1", "0/a", {"v": 1}, [("step_started", {}), ("tool_call", {})]),
            CheckpointWrite("r2", "0/a", {"v": 2}, [("step_started", {})]),
            CheckpointWrite("r1", "1/b", {"v": 3}, [("step_finished", {})]),
            CheckpointWrite("r2", None, None, [("token", {"t": "x"})]),  # events only
            CheckpointWrite("r3", "0/a", "second", [("replayed", {})]),  # already done
        ]
    )
    assert skipped == [("r3", "0/a")]
    assert s.load_checkpoints("r1") == {"0/a": {"v": 1}, "1/b": {"v": 3}}
    assert s.load_checkpoints("r2") == {"0/a": {"v": 2}}
    assert s.load_checkpoints("r3") == {"0/a": "first"}
    assert [e["type"] for e in s.read_events("r1")] == [
        "step_started",
        "tool_call",
        "step_finished",
    ]
    assert [e["type"] for e in s.read_events("r2")] == ["step_started", "token"]
    assert [e["type"] for e in s.read_events("r3")] == ["replayed"]
    assert s.save_many([]) == []
    # All or nothing: one bad value leaves every run as it was.
    with pytest.raises(InputValidationError):
        s.save_many(
            [
                CheckpointWrite("r1", "2/c", "ok", [("e", {})]),
                CheckpointWrite("r2", "1/b", b"bytes are not JSON", [("e", {})]),
            ]
        )
    assert "2/c" not in s.load_checkpoints("r1")
    assert len(s.read_events("r1")) == 3 and len(s.read_events("r2")) == 2
    with pytest.raises(InputValidationError, match="CheckpointWrite"):
        s.save_many([("r1", "x", 1)])  # type: ignore[list-item]


def test_save_many_checks_turns_and_reports_every_skipped_step(
    store_backend: str, make_store: MakeStore
) -> None:
    """save_many is the runner's write path (write_batch) with its checks: an agent
    turn on an events-only write is refused (it would never be stored) before anything
    is written, and a step written twice in one batch reports its second write as
    skipped, as one already stored does."""
    s = make_store()
    _run(s, "r1")
    turn = ThreadMessages("helper", "r1/0.ask", [{"role": "user", "content": "hi"}], "t1")
    with pytest.raises(InputValidationError, match="checkpoint"):
        s.save_many(
            [
                CheckpointWrite("r1", "0/a", 1, [("e", {})]),
                CheckpointWrite("r1", None, None, [("e2", {})], turn),
            ]
        )
    assert s.load_checkpoints("r1") == {} and s.read_events("r1") == []
    skipped = s.save_many(
        [CheckpointWrite("r1", "0/a", "first", (), turn), CheckpointWrite("r1", "0/a", "again")]
    )
    assert skipped == [("r1", "0/a")]
    assert s.load_checkpoints("r1") == {"0/a": "first"}
    assert s.load_messages_many("helper", ["r1/0.ask"])["r1/0.ask"] == list(turn.messages)


def test_concurrent_writers(store_backend: str, make_store: MakeStore) -> None:
    """Threads with separate stores (separate pools, like separate processes) write
    events, messages and checkpoints at once: nothing lost, numbering contiguous,
    exactly one of several claimants gets a lease."""
    stores = [make_store() for _ in range(4)]
    _run(stores[0], "shared")
    for i in range(4):
        _run(stores[0], f"own{i}")
    per_thread = 15
    errors: list[BaseException] = []
    winners: list[int] = []
    barrier = threading.Barrier(len(stores))

    def work(i: int) -> None:
        s = stores[i]
        try:
            barrier.wait(timeout=60)
            if s.claim("shared", f"runner-{i}", stale_after_s=60):
                winners.append(i)
            for k in range(per_thread):
                s.append_events("shared", [("tick", {"w": i, "k": k})])
                s.save_many(
                    [
                        CheckpointWrite(f"own{i}", f"{k}/s", k, [("done", {"k": k})]),
                        CheckpointWrite("shared", None, None, [("group", {"w": i, "k": k})]),
                    ]
                )
                s.append_messages_many("agent", [("thread", [{"w": i, "k": k}])])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(winners) == 1
    shared = stores[0].read_events("shared", limit=10_000)
    assert [e["seq"] for e in shared] == list(range(1, 2 * per_thread * len(stores) + 1))
    for i in range(len(stores)):
        mine = [e["data"]["k"] for e in shared if e["type"] == "tick" and e["data"]["w"] == i]
        assert mine == list(range(per_thread))  # each writer's order kept
        assert len(stores[0].load_checkpoints(f"own{i}")) == per_thread
        assert [e["seq"] for e in stores[0].read_events(f"own{i}")] == list(
            range(1, per_thread + 1)
        )
    msgs = stores[0].load_messages_many("agent", ["thread"])["thread"]
    assert len(msgs) == per_thread * len(stores)
    for i in range(len(stores)):
        assert [m["k"] for m in msgs if m["w"] == i] == list(range(per_thread))


def test_event_logs_by_prefix_match_exactly(store_backend: str, make_store: MakeStore) -> None:
    """Federated runs keep events under ``federated:<name>`` with no runs row; the
    dashboard lists them by prefix: exact (no wildcard, no neighbour) and per tenant."""
    s = make_store()
    for run_id in ("federated:a", "federated:b_1", "federated;x", "federatedz", "run-1"):
        s.append_events(run_id, [("e", {})])
    s.append_events("federated:b_1", [("e", {})])
    make_store("other").append_events("federated:theirs", [("e", {})])
    got = {r["run_id"]: r["events"] for r in s.event_logs("federated:")}
    assert got == {"federated:a": 1, "federated:b_1": 2}
    assert [r["run_id"] for r in s.event_logs("federated:b_")] == ["federated:b_1"]
    assert s.event_logs("federated:%") == []  # a wildcard in the prefix is a character


def test_a_key_with_a_nul_is_refused_alike_on_every_backend(
    store_backend: str, make_store: MakeStore
) -> None:
    from lumos_ray.errors import InputValidationError

    s = make_store()
    with pytest.raises(InputValidationError, match="NUL"):
        s.list_threads("agent\x00x")
    with pytest.raises(InputValidationError, match="NUL"):
        s.thread_messages("a", "t\x00")
