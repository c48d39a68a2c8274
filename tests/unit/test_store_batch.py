"""Group commit (lumos_ray/store/_batch.py): many runs' writes in one transaction,
each caller told about its own write. SQLite in a temp dir; nothing starts Ray."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lumos_ray.errors import InputValidationError
from lumos_ray.store import CheckpointWrite, RunStore, ThreadMessages
from lumos_ray.store._batch import GroupCommitter, RunCreate, RunUpdate, write_batch


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    yield s
    s.close()


def test_one_transaction_many_runs(store: RunStore) -> None:
    out = write_batch(
        store,
        [
            RunCreate("r1", "wf", "v1", {"x": 1}, "running", {"owner": "me", "heartbeat": 1.0}),
            RunCreate("r2", "wf", "v1", None),
        ],
    )
    assert [o.created for o in out] == [True, True]
    row = store.get_run("r1")
    assert (row["status"], row["owner"], row["input"]) == ("running", "me", {"x": 1})

    out = write_batch(
        store,
        [
            CheckpointWrite("r1", "0.a", {"v": 1}, [("step_started", {"step": "0.a"})]),
            CheckpointWrite("r2", None, None, [("run_started", {}), ("step_started", {})]),
            CheckpointWrite("r1", "1.b", 2, [("step_finished", {"step": "0.a"})]),
            RunUpdate("r2", "succeeded", {"output": 7, "owner": None}, [("run_finished", {})]),
        ],
    )
    # Each write gets its own events back, numbered as a store read numbers them.
    assert [e["seq"] for e in out[0].events] == [1]
    assert [e["seq"] for e in out[1].events] == [1, 2]
    assert [e["seq"] for e in out[2].events] == [2]
    assert [(e["seq"], e["type"]) for e in out[3].events] == [(3, "run_finished")]
    assert [e["type"] for e in store.read_events("r1")] == ["step_started", "step_finished"]
    assert [e["seq"] for e in store.read_events("r2")] == [1, 2, 3]
    assert store.load_checkpoints("r1") == {"0.a": {"v": 1}, "1.b": 2}
    r2 = store.get_run("r2")
    assert (r2["status"], r2["output"], r2["owner"]) == ("succeeded", 7, None)


def test_duplicates_are_reported_not_fatal(store: RunStore) -> None:
    write_batch(store, [RunCreate("r1", "wf", "v1")])
    write_batch(store, [CheckpointWrite("r1", "0.a", 1)])
    out = write_batch(
        store,
        [
            RunCreate("r1", "wf", "v1"),  # exists: the first start stands
            RunCreate("r3", "wf", "v1"),
            RunCreate("r3", "wf", "v1"),  # twice in one batch
            CheckpointWrite("r1", "0.a", 99),  # replayed step: the first checkpoint stands
            CheckpointWrite("r1", "1.b", 2),
        ],
    )
    assert [o.created for o in out[:3]] == [False, True, False]
    assert [o.stored for o in out[3:]] == [False, True]
    assert store.load_checkpoints("r1") == {"0.a": 1, "1.b": 2}


def test_two_updates_of_one_run_apply_in_order(store: RunStore) -> None:
    write_batch(store, [RunCreate("r1", "wf", "v1")])
    write_batch(
        store,
        [RunUpdate("r1", "running", {"owner": "me"}), RunUpdate("r1", "failed", {"owner": None})],
    )
    row = store.get_run("r1")
    assert (row["status"], row["owner"]) == ("failed", None)


def test_committer_batches_and_isolates_bad_writes(store: RunStore) -> None:
    async def go() -> GroupCommitter:
        gc = GroupCommitter(store)
        await asyncio.gather(*(gc.write(RunCreate(f"r{i}", "wf", "v1")) for i in range(50)))
        # A bad write fails its own caller at once, before it can join a batch.
        with pytest.raises(InputValidationError, match="run status"):
            gc.submit(RunUpdate("r1", "bogus"))
        with pytest.raises(InputValidationError, match="run fields"):
            gc.submit(RunCreate("rx", "wf", "v1", fields={"output": 1}))
        # A value that fails in the database fails alone: the batch is retried one by one.
        good = [gc.submit(CheckpointWrite(f"r{i}", "0.a", i)) for i in range(10)]
        bad = gc.submit(CheckpointWrite("r1", "1.b", float("nan")))
        assert [r.stored for r in await asyncio.gather(*good)] == [True] * 10
        with pytest.raises(InputValidationError):
            await bad
        return gc

    gc = asyncio.run(go())
    assert len(store.list_runs(limit=100)) == 50
    assert store.load_checkpoints("r3") == {"0.a": 3}
    assert gc.commits < gc.writes  # grouped: fewer transactions than writes


def test_a_steps_agent_turn_is_stored_with_its_checkpoint_only(store: RunStore) -> None:
    said = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    write_batch(store, [RunCreate("r1", "wf", "v1")])
    turn = ThreadMessages("helper", "r1/0.ask", said, "turn-1")
    out = write_batch(store, [CheckpointWrite("r1", "0.ask", "yo", (), turn)])
    assert out[0].stored
    msgs, turns = store.load_threads("helper", ["r1/0.ask"])["r1/0.ask"]
    assert msgs == said and turns == {"turn-1": 0}
    # The same step again (a replayed attempt): its first checkpoint and turn stand.
    again = ThreadMessages("helper", "r1/0.ask", [{"role": "user", "content": "x"}], "turn-2")
    out = write_batch(store, [CheckpointWrite("r1", "0.ask", "other", (), again)])
    assert not out[0].stored
    assert store.load_messages_many("helper", ["r1/0.ask"])["r1/0.ask"] == said
    # RunStore.save_many keeps the same rule.
    store.save_many(
        [CheckpointWrite("r1", "1.ask", 1, (), again), CheckpointWrite("r1", "0.ask", 2, (), again)]
    )
    assert store.load_messages_many("helper", ["r1/0.ask"])["r1/0.ask"] == [
        *said,
        again.messages[0],
    ]


def test_a_turn_without_a_checkpoint_is_refused_before_the_batch(store: RunStore) -> None:
    from lumos_ray.store._batch import check_write

    turn = ThreadMessages("helper", "t", [{"role": "user"}])
    with pytest.raises(InputValidationError, match="checkpoint"):
        check_write(store, CheckpointWrite("r1", None, None, (), turn))
    with pytest.raises(InputValidationError, match="thread_id"):
        check_write(store, CheckpointWrite("r1", "0.a", 1, (), ThreadMessages("h", "", [])))
