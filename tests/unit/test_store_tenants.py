"""Tenant isolation is a filter the store applies to every statement.

Two stores on ONE database with different tenants: neither can see nor change the
other's runs, leases, checkpoints, events, definitions, messages or working memory,
even when both use the same ids. Runs on both backends.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lumos_ray.errors import InputValidationError, NotFoundError
from lumos_ray.store import CheckpointWrite, RunStore

MakeStore = Callable[..., RunStore]


def _fill(s: RunStore, tag: str) -> None:
    s.put_definition("workflow", "wf", "v1", {"owner": tag})
    s.create_run("r1", "wf", "v1", {"owner": tag})
    s.save_checkpoint("r1", "0/a", {"owner": tag}, [("step", {"owner": tag})])
    s.append_events("r1", [("more", {"owner": tag})])
    s.append_messages_many("agent", [("t1", [{"owner": tag}])])
    s.save_working_memory("agent", "t1", {"owner": tag})


def test_two_tenants_share_a_database_but_not_data(
    store_backend: str, make_store: MakeStore
) -> None:
    a = make_store("acme")
    b = make_store("globex")
    _fill(a, "acme")
    _fill(b, "globex")  # the same ids: keys include the tenant, so no clash

    for s, tag in ((a, "acme"), (b, "globex")):
        assert [r["input"] for r in s.list_runs()] == [{"owner": tag}]
        assert s.get_run("r1")["tenant_id"] == s.tenant_id
        assert s.get_definition("workflow", "wf")["body"] == {"owner": tag}
        assert len(s.list_definitions("workflow")) == 1
        assert s.load_checkpoints("r1") == {"0/a": {"owner": tag}}
        assert [(e["seq"], e["data"]) for e in s.read_events("r1")] == [
            (1, {"owner": tag}),
            (2, {"owner": tag}),
        ]
        assert s.load_messages_many("agent", ["t1"]) == {"t1": [{"owner": tag}]}
        assert s.load_working_memory("agent", "t1") == {"owner": tag}


def test_a_tenant_cannot_modify_another_tenants_rows(
    store_backend: str, make_store: MakeStore
) -> None:
    a = make_store("acme")
    b = make_store("globex")
    _fill(a, "acme")
    b.create_run("only-a-has-this", "wf", "v1", {})  # b's own, so b has a row too
    a.create_run("a-only", "wf", "v1", {})

    # Reads by id of a's run from b: not found.
    with pytest.raises(NotFoundError):
        b.get_run("a-only")
    with pytest.raises(NotFoundError):
        b.get_definition("workflow", "wf", "v1")
    assert b.load_checkpoints("r1") == {} and b.read_events("r1") == []
    assert b.stale_runs(0) == ["only-a-has-this"]

    # Writes by id from b leave a's rows as they were.
    b.set_status("a-only", "cancelled", output={"by": "b"})
    assert not b.claim("a-only", "runner-b", stale_after_s=0)
    a.claim("r1", "runner-a", stale_after_s=30)
    hb = a.get_run("r1")["heartbeat"]
    b.renew("runner-a", ["r1"])  # even with a's owner name
    assert a.get_run("r1")["heartbeat"] == hb
    row = a.get_run("a-only")
    assert row["status"] == "pending" and row["output"] is None and row["owner"] is None
    assert a.get_run("r1")["owner"] == "runner-a"

    # b's events/checkpoints/messages under a's ids land in b's own keyspace.
    b.append_events("r1", [("b-event", {})])
    b.save_many([CheckpointWrite("r1", "0/a", "b's", [("b-cp", {})])])
    b.save_working_memory("agent", "t1", {"owner": "b"})
    b.append_messages_many("agent", [("t1", [{"owner": "b"}])])
    assert [e["type"] for e in a.read_events("r1")] == ["step", "more"]
    assert a.load_checkpoints("r1") == {"0/a": {"owner": "acme"}}
    assert a.load_working_memory("agent", "t1") == {"owner": "acme"}
    assert a.load_messages_many("agent", ["t1"]) == {"t1": [{"owner": "acme"}]}
    assert [e["seq"] for e in b.read_events("r1")] == [1, 2]  # b's own numbering
    # A view of the same engine for another tenant is as isolated as a new store.
    assert a.for_tenant("globex").load_checkpoints("r1") == {"0/a": "b's"}
    assert a.for_tenant("nobody").list_runs() == []


@pytest.mark.parametrize("bad", ["", "x" * 65, "has space", "../etc", "tenant/a", 7, None])
def test_tenant_ids_are_checked(tmp_path, bad: object) -> None:
    with pytest.raises(InputValidationError, match="tenant"):
        RunStore(f"sqlite:///{tmp_path}/runs.db", bad)  # type: ignore[arg-type]
