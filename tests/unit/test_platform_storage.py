"""Storage bytes per tenant: measured (store rows, RAG folders, the tenant's adapters),
reported, and enforced at the plan's limit; plus the store's thread and run deletes
that get a tenant back under it. On SQLite and PostgreSQL (``store_backend``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray.errors import NotFoundError, QuotaExceededError, RunStateError
from lumos_ray.platform import Plan, Plans, Platform, Principal, Role
from lumos_ray.store import RunStore, tenant_bytes

LIMIT = 20_000
PLANS = Plans(
    default_plan="free",
    plans={
        "free": Plan(api_calls_per_month=None, concurrent_agents=None, storage_bytes="1 GB"),
        "tiny": Plan(api_calls_per_month=None, concurrent_agents=None, storage_bytes=LIMIT),
        "open": Plan(api_calls_per_month=None, concurrent_agents=None, storage_bytes=None),
    },
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def platform(store_backend: str, store_url: str, home: Path) -> Iterator[Platform]:
    p = Platform(store_url, plans=PLANS, shared=False, home=str(home))
    yield p
    p.close()


@pytest.fixture
def stores(store_url: str) -> Iterator[dict[str, RunStore]]:
    a = RunStore(store_url, "acme")
    yield {"acme": a, "globex": a.for_tenant("globex")}
    a.close()


def test_store_bytes_count_only_the_tenants_rows(
    platform: Platform, stores: dict[str, RunStore]
) -> None:
    a, b = stores["acme"], stores["globex"]
    a.create_run("r1", "wf", "v1", {"text": "x" * 3000}, status="succeeded")
    a.save_checkpoint("r1", "0.step", {"out": "y" * 2000})
    a.append_messages_many("helper", [("t1", [{"role": "user", "content": "z" * 1000}])])
    got = tenant_bytes(platform._db, "acme")
    assert got["runs"] >= 3000 and got["checkpoints"] >= 2000 and got["messages"] >= 1000
    assert sum(tenant_bytes(platform._db, "globex").values()) == 0
    b.create_run("r1", "wf", "v1", {"text": "small"})
    assert sum(tenant_bytes(platform._db, "globex").values()) < 1000
    assert tenant_bytes(platform._db, "acme") == got  # globex's rows are not acme's


def test_measurement_adds_rag_folders_and_own_adapters_only(
    platform: Platform, home: Path, tmp_path: Path
) -> None:
    own = home / "rag" / "acme" / "docs" / "shard-0"
    own.mkdir(parents=True)
    (own / "snap.bin").write_bytes(b"\0" * 5000)
    elsewhere = tmp_path / "custom" / "acme" / "kb"  # a collection with its own snapshot_dir
    elsewhere.mkdir(parents=True)
    (elsewhere / "snap.bin").write_bytes(b"\0" * 700)
    reg = home / "rag" / "acme" / "_registry"
    reg.mkdir(parents=True)
    entry = {"name": "kb", "tenant": "acme", "root": str(elsewhere)}
    (reg / "kb.json").write_text(json.dumps(entry))
    (reg / "s3.json").write_text(json.dumps({"name": "s3", "tenant": "acme", "root": "s3://b/x"}))
    other = home / "rag" / "globex" / "docs"
    other.mkdir(parents=True)
    (other / "snap.bin").write_bytes(b"\0" * 9000)
    adapters = [("mine", "acme", 3000), ("theirs", "globex", 4000), ("shared", None, 8000)]
    for name, tenant, size in adapters:
        d = home / "adapters" / name / "adapter"
        d.mkdir(parents=True)
        (d / "weights.bin").write_bytes(b"\0" * size)
        (d.parent / "metadata.json").write_text(json.dumps({"name": name, "tenant": tenant}))

    r = platform.storage("acme")
    assert 5700 <= r.rag < 5700 + 500  # its folder, the registry entries, the custom root
    assert 3000 <= r.adapters < 3000 + 200  # its adapter only (metadata.json included)
    assert r.total == r.rag + r.adapters + sum(r.store.values())
    assert r.skipped == ("s3://b/x",) and not r.truncated
    # A bounded walk says so instead of running on.
    from lumos_ray.platform._storage import measure

    small = measure(platform._db, "acme", home, max_entries=3)
    assert small.truncated and small.total < r.total


def test_usage_and_quota_status_report_storage(platform: Platform, home: Path) -> None:
    platform.create_tenant("acme", "tiny")
    (home / "rag" / "acme" / "d").mkdir(parents=True)
    (home / "rag" / "acme" / "d" / "f").write_bytes(b"\0" * 1234)
    status = platform.quota_status("acme")
    assert status["storage"]["used"] >= 1234 and status["storage"]["limit"] == LIMIT
    (day,) = platform.usage("acme")
    assert day.storage_bytes == status["storage"]["used"]  # metered as the day's gauge


def test_writes_over_the_storage_limit_are_refused_with_used_limit_and_fix(
    platform: Platform, stores: dict[str, RunStore], home: Path
) -> None:
    platform.create_tenant("acme", "tiny")
    platform.create_tenant("globex", "tiny")
    a = stores["acme"]
    platform.check_storage("acme")  # empty: fine
    with pytest.raises(QuotaExceededError) as info:  # a write that says its size
        platform.check_storage("acme", incoming_bytes=LIMIT + 1)
    assert "this write adds" in info.value.message
    a.create_run("big", "wf", "v1", {"text": "x" * LIMIT}, status="succeeded")
    a.append_messages_many("helper", [("t1", [{"content": "m" * 100}])])
    # Within one scan interval the old measurement stands (the documented overshoot);
    # the next scan sees the new rows.
    platform.check_storage("acme")
    platform.storage("acme", fresh=True)
    with pytest.raises(QuotaExceededError) as info:
        platform.check_storage("acme")
    err = info.value
    assert err.details["metric"] == "storage_bytes" and err.details["limit"] == LIMIT
    assert err.details["used"] > LIMIT and err.details["retry_after_s"] >= 1
    assert "20.0 kB" in err.message and "delete" in (err.fix or "").lower()
    assert "set-plan" in (err.fix or "")
    platform.check_storage("globex")  # another tenant is not affected
    # Deleting data gets it back under the limit from the next measurement.
    a.delete_run("big")
    platform.storage("acme", fresh=True)
    platform.check_storage("acme")


def test_tenants_without_a_row_or_limit_are_never_refused(
    platform: Platform, stores: dict[str, RunStore]
) -> None:
    stores["acme"].create_run("big", "wf", "v1", {"text": "x" * (2 * LIMIT)})
    platform.check_storage("acme")  # no platform row: not limited (like agent slots)
    platform.create_tenant("acme", "open")
    platform.check_storage("acme")  # a plan with no storage limit


def test_usage_of_another_tenant_is_not_found(platform: Platform) -> None:
    platform.create_tenant("acme", "tiny")
    platform.create_tenant("globex", "tiny")
    platform.record_usage("acme", requests=3)
    b = Principal("globex", Role.ADMIN, "k")
    mine = platform.tenant_usage(b)
    assert mine["tenant"] == "globex" and all(d["tenant"] == "globex" for d in mine["days"])
    with pytest.raises(NotFoundError) as known:
        platform.tenant_usage(b, "acme")
    with pytest.raises(NotFoundError) as unknown:
        platform.tenant_usage(b, "nosuch")
    # The same answer for a tenant that exists and one that does not.
    assert known.value.message.replace("acme", "X") == unknown.value.message.replace("nosuch", "X")


def test_threads_list_read_delete_stay_in_the_tenant(stores: dict[str, RunStore]) -> None:
    a, b = stores["acme"], stores["globex"]
    a.append_messages_many("helper", [("t1", [{"role": "user", "content": "secret"}])])
    a.save_working_memory("helper", "t2", {"note": "n"})
    assert [(t["agent"], t["thread_id"], t["messages"]) for t in a.list_threads()] == [
        ("helper", "t1", 1)
    ]
    assert a.thread_messages("helper", "t1")[0]["content"] == "secret"
    assert a.thread_messages("helper", "t2") == []  # only notes: it exists
    assert b.list_threads() == []
    for call in (b.thread_messages, b.delete_thread):
        with pytest.raises(NotFoundError):
            call("helper", "t1")
    assert a.delete_thread("helper", "t1") == 1
    with pytest.raises(NotFoundError):
        a.thread_messages("helper", "t1")


def test_delete_run_only_finished_and_only_own(stores: dict[str, RunStore]) -> None:
    a, b = stores["acme"], stores["globex"]
    a.create_run("r1", "wf", "v1", {}, status="running")
    a.save_checkpoint("r1", "0.s", {"x": 1}, [("step.finished", {})])
    with pytest.raises(NotFoundError):
        b.delete_run("r1")
    with pytest.raises(RunStateError):
        a.delete_run("r1")
    a.set_status("r1", "succeeded")
    a.delete_run("r1")
    assert a.load_checkpoints("r1") == {} and a.read_events("r1") == []
    with pytest.raises(NotFoundError):
        a.get_run("r1")


def test_lumos_usage_show_reports_storage_against_the_limit(
    store_url: str,
    stores: dict[str, RunStore],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lumos_ray.cli import main

    plans = tmp_path / "plans.yaml"
    plans.write_text(
        "default_plan: tiny\nplans:\n"
        f"  tiny: {{api_calls_per_month: null, concurrent_agents: 1, storage_bytes: {LIMIT}}}\n"
    )
    monkeypatch.setenv("LUMOS_STORE_URL", store_url)
    monkeypatch.setenv("LUMOS_PLANS_FILE", str(plans))
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    Platform(store_url, plans=PLANS, shared=False).create_tenant("acme", "tiny")
    stores["acme"].create_run("big", "wf", "v1", {"text": "x" * LIMIT})
    main(["usage", "show", "--tenant", "acme"])  # returns (no SystemExit) on success
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("storage "))
    assert f"/{LIMIT:,} bytes" in line and "OVER THE LIMIT" in line
    assert "(no usage recorded)" not in out  # the measurement is metered, then listed


def test_a_stale_measurement_is_used_and_refreshed_in_the_background(
    platform: Platform, stores: dict[str, RunStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from lumos_ray.platform import _storage

    platform.create_tenant("acme", "tiny")
    platform.check_storage("acme")  # the first check measures (empty)
    first = platform.storage("acme")
    stores["acme"].create_run("big", "wf", "v1", {"text": "x" * LIMIT}, status="succeeded")
    monkeypatch.setattr(_storage, "STORAGE_SCAN_S", 0.0)  # every measurement is stale now
    platform.check_storage("acme")  # decided on the stale (empty) one: not refused
    deadline = time.monotonic() + 60
    while platform._storage_cache["acme"].measured_at == first.measured_at:
        assert time.monotonic() < deadline, "no background measurement happened"
        time.sleep(0.05)
    assert platform._storage_cache["acme"].total > LIMIT
    with pytest.raises(QuotaExceededError):
        platform.check_storage("acme")
