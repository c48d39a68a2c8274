"""The group commit's driver SQL (lumos_ray/store/_batch_sql.py) on each backend
(--store-backend): what it writes reads back through the store exactly as the
SQLAlchemy Core path wrote it, across tenants, in multi-row chunks, and with the same
clear error for a value that is not JSON. Nothing starts Ray."""

from __future__ import annotations

from typing import Any

import pytest

from lumos_ray.errors import InputValidationError
from lumos_ray.store import CheckpointWrite, ThreadMessages, encode_json
from lumos_ray.store._batch import RunCreate, RunUpdate, write_batch
from lumos_ray.store._batch_sql import ROWS_PER_INSERT


def test_a_runs_writes_read_back_with_json_nulls_and_sql_nulls_kept_apart(
    make_store: Any,
) -> None:
    store = make_store()
    (created,) = write_batch(
        store,
        [RunCreate("r1", "wf", "v1", None, "running", {"trace": None, "owner": "me"})],
    )
    assert created.created
    turn = ThreadMessages(
        "agent-a",
        "r1/0.a",
        [{"role": "user", "content": "hi \u00e9"}, {"role": "assistant", "content": None}],
        "turn-1",
    )
    out = write_batch(
        store,
        [
            CheckpointWrite(
                "r1", "0.a", {"nested": [1, 2.5, None, "x"]}, [("step_started", {})], turn
            ),
            RunUpdate("r1", "succeeded", {"output": None, "owner": None}, [("run_finished", {})]),
        ],
    )
    assert [e["seq"] for w in out for e in w.events] == [1, 2]
    row = store.get_run("r1")
    assert (row["status"], row["input"], row["output"], row["owner"]) == (
        "succeeded",
        None,
        None,
        None,
    )
    assert store.load_checkpoints("r1") == {"0.a": {"nested": [1, 2.5, None, "x"]}}
    assert [(e["seq"], e["type"]) for e in store.read_events("r1")] == [
        (1, "step_started"),
        (2, "run_finished"),
    ]
    msgs = store.thread_messages("agent-a", "r1/0.a")
    assert msgs == [
        {"role": "user", "content": "hi \u00e9"},
        {"role": "assistant", "content": None},
    ]
    # A second turn on the thread continues its numbering.
    store.append_messages_many("agent-a", [("r1/0.a", [{"role": "user"}])])
    assert len(store.thread_messages("agent-a", "r1/0.a")) == 3


def test_creates_beyond_one_statement_and_duplicates_per_tenant(make_store: Any) -> None:
    a, b = make_store("tenant-a"), make_store("tenant-b")
    n = ROWS_PER_INSERT + 7  # two multi-row INSERT ... RETURNING statements
    write_batch(a, [RunCreate("dup", "wf", "v1")])
    writes = [RunCreate(f"r{i}", "wf", "v1", {"i": i}) for i in range(n)]
    out = write_batch(a, [*writes, RunCreate("dup", "wf", "v2")])
    assert all(o.created for o in out[:-1]) and not out[-1].created
    assert a.get_run(f"r{n - 1}")["input"] == {"i": n - 1}
    assert a.get_run("dup")["version"] == "v1"  # the first create stands
    # The same ids in another tenant are other runs.
    assert all(o.created for o in write_batch(b, [RunCreate("dup", "wf", "v9")]))
    assert b.get_run("dup")["version"] == "v9"
    # Updates of many runs (one executemany per set of columns) touch only their tenant.
    write_batch(a, [RunUpdate(f"r{i}", "succeeded", {"output": i}) for i in range(n)])
    assert a.get_run("r3")["output"] == 3
    assert b.get_run("dup")["status"] == "pending"


@pytest.mark.parametrize("bad", [float("nan"), {"x": object()}])
def test_a_value_that_is_not_json_fails_clearly_and_writes_nothing(
    make_store: Any, bad: Any
) -> None:
    store = make_store()
    write_batch(store, [RunCreate("r1", "wf", "v1")])
    with pytest.raises(InputValidationError, match="not storable JSON"):
        write_batch(
            store,
            [
                CheckpointWrite("r1", None, None, [("ok", {})]),
                RunUpdate("r1", "failed", {"output": bad}),
            ],
        )
    assert store.read_events("r1") == []
    assert store.get_run("r1")["status"] == "pending"


def test_a_value_encoded_up_front_is_stored_as_is(make_store: Any) -> None:
    store = make_store()
    value = {"q": "caf\u00e9", "n": [1, None]}
    write_batch(store, [RunCreate("r1", "wf", "v1", encode_json(value, "the input"))])
    assert store.get_run("r1")["input"] == value
    with pytest.raises(InputValidationError, match="the input is not storable JSON"):
        encode_json({"x": float("inf")}, "the input")
