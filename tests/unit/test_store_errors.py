"""Bad input to the store: a clear error with the fix, never a driver traceback.

URLs are checked before anything connects; an unreachable or refusing database fails
when the store is opened (not at the first run), and no message shows a password.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from lumos_ray.errors import ConfigError, InputValidationError, LumosError
from lumos_ray.store import CONNECT_TIMEOUT_S, RunStore, StoreError, _engine, mask_url, open_store

MakeStore = Callable[..., RunStore]
SECRET = "s3cr3t-pw"


def _closed_port() -> int:
    with socket.socket() as s:  # bound and closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("", "empty"),
        ("not a url", "malformed"),
        ("://nothing", "malformed"),
        (f"mysql+pymysql://u:{SECRET}@db/x", "unsupported scheme 'mysql.pymysql'"),
        (f"postgresql+psycopg2://u:{SECRET}@db/x", "unsupported scheme"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///relative/runs.db", "relative path"),
        (f"postgresql+psycopg://u:{SECRET}@db.example", "names no database"),
        ("postgresql+psycopg:///x", "names no PostgreSQL host"),
        ("sqlite:////" + "x" * 3000, "characters long"),
    ],
)
def test_bad_urls_are_refused_before_connecting(url: str, expect: str) -> None:
    with pytest.raises(StoreError, match=expect) as info:
        RunStore(url)
    err = info.value
    assert isinstance(err, ConfigError) and err.code == "LUMOS-E001"
    assert SECRET not in str(err) and SECRET not in err.fix
    assert "LUMOS_STORE_URL" in err.fix or "sqlite:////" in err.fix or "createdb" in err.fix


def test_an_unreachable_server_fails_at_open_naming_the_masked_url() -> None:
    port = _closed_port()
    url = f"postgresql+psycopg://lumos:{SECRET}@127.0.0.1:{port}/runs"
    with pytest.raises(StoreError) as info:
        RunStore(url)
    err = info.value
    assert f"postgresql+psycopg://lumos:***@127.0.0.1:{port}/runs" in err.message
    assert "Cannot open the run store" in err.message
    assert SECRET not in str(err) and SECRET not in err.fix and SECRET not in repr(err.to_dict())
    assert f"{CONNECT_TIMEOUT_S} s" in err.fix and "reachable" in err.fix
    # open_store does not cache a failure: the next call tries (and fails) again.
    with pytest.raises(StoreError):
        open_store(url, "default")


def test_wrong_password_and_missing_database_on_a_real_server(postgres_server) -> None:
    good = postgres_server.url("postgres")
    bad_pw = good.replace(postgres_server.password, SECRET)
    with pytest.raises(StoreError, match="password authentication failed") as info:
        RunStore(bad_pw)
    assert SECRET not in str(info.value) and ":***@" in str(info.value)
    with pytest.raises(StoreError, match="no_such_db") as info:
        RunStore(good.rsplit("/", 1)[0] + "/no_such_db")
    assert postgres_server.password not in str(info.value)
    assert "createdb" in info.value.fix


def test_a_sqlite_path_that_is_a_directory(tmp_path) -> None:
    with pytest.raises(StoreError, match="Cannot open the run store") as info:
        RunStore(f"sqlite:///{tmp_path}")
    assert str(tmp_path) in info.value.fix


def test_mask_url() -> None:
    assert mask_url(f"postgresql+psycopg://u:{SECRET}@h:5/d") == "postgresql+psycopg://u:***@h:5/d"
    assert SECRET not in mask_url(f"weird ://u:{SECRET}@h")
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_bad_values_and_bounds(
    store_backend: str, make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = make_store()
    s.create_run("r1", "wf", "v1", {})
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: s.create_run("x" * 201, "wf", "v1", {}), "run_id"),
        (lambda: s.create_run("", "wf", "v1", {}), "run_id"),
        (lambda: s.create_run("r2", "wf", "v" * 65, {}), "version"),
        (lambda: s.create_run("r2", "wf", "v1", {"f": float("inf")}), "not storable JSON"),
        (lambda: s.create_run("r2", "wf", "v1", {"b": b"raw"}), "not storable JSON"),
        (lambda: s.create_run("r2", "wf", "v1", {}, status="exploded"), "Invalid run status"),
        (lambda: s.set_status("r1", "running", colour="red"), "unknown run fields: colour"),
        (lambda: s.set_status("r1", "running", tenant_id="other"), "unknown run fields"),
        (lambda: s.list_runs(limit=0), "Invalid limit"),
        (lambda: s.list_runs(limit=10**9), "Invalid limit"),
        (lambda: s.read_events("r1", limit=-1), "Invalid limit"),
        (lambda: s.append_events("r1", [("only-a-type",)]), "type, data"),  # type: ignore[list-item]
        (lambda: s.append_events("r1", [("t" * 65, {})]), "event_type"),
        (lambda: s.save_checkpoint("r1", "p" * 501, 1), "path"),
        (lambda: s.put_definition("workflow", "wf", "v1", ["not", "a", "dict"]), "JSON object"),  # type: ignore[arg-type]
        (lambda: s.append_messages_many("a" * 201, [("t", [{}])]), "agent"),
    ]
    for call, expect in cases:
        with pytest.raises(InputValidationError, match=expect) as info:
            call()
        assert isinstance(info.value, LumosError) and info.value.fix
    # Values over the size bound are refused (the bound lowered to keep the test small).
    monkeypatch.setattr(_engine, "MAX_VALUE_BYTES", 1000)
    with pytest.raises(InputValidationError, match="at most 1000"):
        s.save_checkpoint("r1", "big", "x" * 2000)
    assert s.load_checkpoints("r1") == {}
    assert s.get_run("r1")["status"] == "pending"  # nothing above changed the run
