"""The schema and its migrations, on both backends.

- the migrations build exactly the schema the code uses (Alembic's own comparison);
- every primary key starts with tenant_id, and no column can hold a pickle;
- a store from the release before migrations is converted (pickled definitions
  dropped, unfinished runs failed with a message), with a backup of the SQLite file;
- a store written by a newer release is refused, not used.
"""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from lumos_ray.store import RunStore, StoreError
from lumos_ray.store._migrate import VERSION_TABLE, head_revision
from lumos_ray.store._schema import RUN_TABLES, TABLES, metadata

MakeStore = Callable[..., RunStore]


def _engine(url: str) -> sa.Engine:
    """A plain engine, to look at the database behind the store's back."""
    return sa.create_engine(url)


def test_migrations_build_the_schema_the_code_uses(
    store_backend: str, make_store: MakeStore, store_url: str
) -> None:
    make_store()
    engine = _engine(store_url)
    try:
        with engine.connect() as c:
            diff = compare_metadata(
                MigrationContext.configure(c, opts={"version_table": VERSION_TABLE}), metadata
            )
            insp = sa.inspect(c)
            assert set(insp.get_table_names()) == {t.name for t in TABLES} | {VERSION_TABLE}
            for t in TABLES:
                pk = insp.get_pk_constraint(t.name)["constrained_columns"]
                assert pk[0] == "tenant_id", f"{t.name} key {pk} does not start with the tenant"
                for col in insp.get_columns(t.name):
                    kind = str(col["type"]).upper()
                    assert "BLOB" not in kind and "BYTEA" not in kind and "BINARY" not in kind
            rev = c.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    finally:
        engine.dispose()
    assert diff == [], diff
    assert rev == head_revision()
    for t in TABLES:
        assert next(iter(t.primary_key.columns)).name == "tenant_id"
        assert not any(isinstance(c.type, sa.LargeBinary | sa.PickleType) for c in t.columns)


def test_reopening_and_concurrent_first_opens(store_backend: str, make_store: MakeStore) -> None:
    """Many processes open a new store at once when a cluster starts: the upgrade runs
    once, under a lock, and every opener gets a working store."""
    errors: list[BaseException] = []
    opened: list[RunStore] = []

    def open_one(i: int) -> None:
        try:
            s = make_store(f"t{i}")
            s.create_run(f"r{i}", "wf", "v", {})
            opened.append(s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(opened) == 4
    assert [r["id"] for r in make_store("t0").list_runs()] == ["r0"]  # reopen: no-op


# -- the release before migrations ----------------------------------------------------

_OLD = sa.MetaData()
sa.Table(
    "runs",
    _OLD,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("definition", sa.LargeBinary, nullable=False),
    sa.Column("input", sa.JSON),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("output", sa.JSON),
    sa.Column("error", sa.JSON),
    sa.Column("suspended", sa.JSON),
    sa.Column("trace", sa.JSON),
    sa.Column("owner", sa.String(64)),
    sa.Column("heartbeat", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
sa.Table(
    "checkpoints",
    _OLD,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("path", sa.String(500), primary_key=True),
    sa.Column("output", sa.JSON),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Table(
    "events",
    _OLD,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", sa.JSON),
)
sa.Table(
    "messages",
    _OLD,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("agent", sa.String(200), nullable=False),
    sa.Column("thread_id", sa.String(200), nullable=False, index=True),
    sa.Column("message", sa.JSON, nullable=False),
)
sa.Table(
    "working_memory",
    _OLD,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("agent", sa.String(200), primary_key=True),
    sa.Column("thread_id", sa.String(200), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
)


class _NotLoaded:
    """Stands in for the pickled Workflow; the migration must never unpickle it."""


def _write_old_store(url: str) -> None:
    engine = _engine(url)
    blob = pickle.dumps(_NotLoaded())
    t = _OLD.tables
    try:
        with engine.begin() as c:
            _OLD.create_all(c)
            base: dict[str, object] = {col.name: None for col in t["runs"].columns}
            base.update(workflow="wf", definition=blob, created_at=1.0, updated_at=2.0)
            c.execute(
                sa.insert(t["runs"]),
                [
                    {**base, "id": "done", "tenant_id": "acme", "input": {"q": 1},
                     "status": "succeeded", "output": {"a": 42}},
                    {**base, "id": "waiting", "tenant_id": "acme", "input": {"q": 2},
                     "status": "suspended", "suspended": {"step": "1/ok", "prompt": "?"}},
                    {**base, "id": "live", "tenant_id": "default", "input": None,
                     "status": "running", "owner": "runner-x", "heartbeat": 3.0},
                ],
            )  # fmt: skip
            c.execute(
                sa.insert(t["checkpoints"]),
                [
                    {"run_id": "done", "path": "0/a", "output": {"x": 1}, "created_at": 1.5},
                    {"run_id": "live", "path": "0/a", "output": [1, 2], "created_at": 1.5},
                ],
            )
            c.execute(
                sa.insert(t["events"]),
                [
                    {"run_id": "done", "ts": 1.0, "type": "run_started", "data": {}},
                    {"run_id": "live", "ts": 1.0, "type": "run_started", "data": {}},
                    {"run_id": "done", "ts": 1.1, "type": "run_finished", "data": {"k": "é"}},
                    {"run_id": "federated:x", "ts": 1.2, "type": "round", "data": {"n": 1}},
                ],
            )
            c.execute(
                sa.insert(t["messages"]),
                [
                    {"tenant_id": "acme", "agent": "ag", "thread_id": "t", "message": {"m": 1}},
                    {"tenant_id": "acme", "agent": "ag", "thread_id": "t", "message": {"m": 2}},
                ],
            )
            c.execute(
                sa.insert(t["working_memory"]),
                [{"tenant_id": "acme", "agent": "ag", "thread_id": "t", "data": '{"n": 3}'}],
            )
    finally:
        engine.dispose()


def test_a_pre_migration_store_is_converted(
    store_backend: str, store_url: str, make_store: MakeStore
) -> None:
    _write_old_store(store_url)
    acme = make_store("acme")
    default = make_store("default")

    done = acme.get_run("done")
    assert (done["status"], done["output"], done["input"]) == ("succeeded", {"a": 42}, {"q": 1})
    assert "definition" not in done
    assert acme.load_checkpoints("done") == {"0/a": {"x": 1}}
    evs = acme.read_events("done")
    assert [(e["seq"], e["type"]) for e in evs] == [(1, "run_started"), (3, "run_finished")]
    assert evs[1]["data"] == {"k": "é"}
    acme.append_events("done", [("later", {})])  # numbering continues after the old seqs
    assert acme.read_events("done", after=3)[0]["seq"] == 4

    # Unfinished runs cannot resume without their (dropped) pickled definition.
    for store, run_id in ((acme, "waiting"), (default, "live")):
        row = store.get_run(run_id)
        assert row["status"] == "failed" and row["owner"] is None
        assert "pickled code" in row["error"]["message"]
        assert "Start the run again" in row["error"]["fix"]
    assert default.load_checkpoints("live") == {"0/a": [1, 2]}  # kept for the record
    assert [e["type"] for e in default.read_events("federated:x")] == ["round"]
    assert acme.load_messages_many("ag", ["t"]) == {"t": [{"m": 1}, {"m": 2}]}
    assert acme.load_working_memory("ag", "t") == {"n": 3}
    assert default.list_runs() and default.stale_runs(0) == []  # nothing left to adopt

    # No pickle survives anywhere, and the old tables are gone.
    engine = _engine(store_url)
    try:
        with engine.connect() as c:
            names = set(sa.inspect(c).get_table_names())
            assert not {n for n in names if n.startswith("legacy_")}
            for t in TABLES:
                for raw in c.execute(sa.text(f"SELECT * FROM {t.name}")):
                    for v in raw:
                        assert not isinstance(v, bytes | memoryview), (t.name, raw)
                        assert b"_NotLoaded" not in str(v).encode()
    finally:
        engine.dispose()
    if store_backend == "sqlite":
        backup = Path(store_url[len("sqlite:///") :] + ".pre-migration.bak")
        assert backup.exists()
        old = sa.create_engine(f"sqlite:///{backup}")
        try:
            with old.connect() as c:  # the backup is the old store, untouched
                assert c.execute(sa.text("SELECT count(*) FROM runs")).scalar() == 3
                assert "definition" in {x["name"] for x in sa.inspect(c).get_columns("runs")}
        finally:
            old.dispose()


def test_a_store_from_a_newer_release_is_refused(
    store_backend: str, store_url: str, make_store: MakeStore
) -> None:
    make_store()
    engine = _engine(store_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match=r"9999_from_the_future.*newer release") as info:
        make_store()
    assert "Upgrade lumos_ray" in info.value.fix


def test_raw_rows_are_json_not_pickles(store_backend: str, store_url: str, make_store: MakeStore):
    """What a reader of the database sees: text, numbers and JSON; no binary values."""
    s = make_store()
    s.put_definition("workflow", "wf", "v1", {"name": "wf", "steps": [{"id": "a"}]})
    s.create_run("r1", "wf", "v1", {"q": "question"})
    s.save_checkpoint("r1", "0/a", {"answer": [1, 2]}, [("step_finished", {"step": "a"})])
    s.set_status("r1", "succeeded", output={"a": 1}, trace={"traceparent": "00-ab-cd-01"})
    s.append_messages_many("ag", [("t", [{"role": "user", "content": "hi"}])])
    s.save_working_memory("ag", "t", {"n": 1})
    json_cols = {(t.name, c.name) for t in TABLES for c in t.columns if isinstance(c.type, sa.JSON)}
    engine = _engine(store_url)
    try:
        with engine.connect() as c:
            for t in RUN_TABLES:  # the platform's tables: tests/unit/test_platform_schema.py
                rows = c.execute(sa.text(f"SELECT * FROM {t.name}")).mappings().all()
                assert rows, t.name
                for row in rows:
                    for col, v in row.items():
                        assert not isinstance(v, bytes | memoryview), (t.name, col)
                        if (t.name, col) in json_cols and isinstance(v, str):
                            json.loads(v)  # SQLite keeps JSON as text: valid JSON
    finally:
        engine.dispose()


def test_the_head_revision_constant_names_the_newest_migration() -> None:
    from lumos_ray.store._migrate import HEAD_REVISION

    assert HEAD_REVISION == head_revision()
