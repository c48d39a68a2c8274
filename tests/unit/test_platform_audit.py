"""The audit log is hash-chained per tenant: editing, inserting or deleting one row
with raw SQL makes verification fail and name that entry (SQLite and PostgreSQL), also
through `lumos audit verify`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lumos_ray.cli import main
from lumos_ray.errors import InputValidationError
from lumos_ray.platform import Platform
from tests.unit._platform_helpers import SMALL_PLANS


@pytest.fixture
def platform(store_backend: str, store_url: str) -> Iterator[Platform]:
    p = Platform(store_url, plans=SMALL_PLANS, shared=False)
    yield p
    p.close()


def _sql(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            for s in statements:
                c.execute(sa.text(s))
    finally:
        engine.dispose()


def _log(p: Platform, tenant: str = "acme", n: int = 5) -> None:
    """A tenant with ``n`` entries (tenant.created + n-1 run events)."""
    p.create_tenant(tenant)
    for i in range(2, n + 1):
        p.audit(tenant, "key:0123456789abcdef", "run.started", f"run-{i}", {"i": i})


def _report(p: Platform, tenant: str = "acme") -> tuple[bool, int | None, str | None]:
    (r,) = p.verify_audit(tenant)
    return r.ok, r.first_bad_seq, r.problem


def test_an_untouched_chain_verifies(platform: Platform) -> None:
    _log(platform)
    (r,) = platform.verify_audit("acme")
    assert (r.ok, r.entries, r.head_seq) == (True, 5, 5)
    tail = platform.audit_tail("acme", 2)
    assert [e.seq for e in tail] == [4, 5]
    assert tail[1].prev_hash == tail[0].hash and r.head_hash == tail[1].hash


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE audit_log SET target = 'run-X' WHERE seq = 3",
        "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3",
        "UPDATE audit_log SET ts = ts + 1 WHERE seq = 3",
        "UPDATE audit_log SET detail = NULL WHERE seq = 3",
    ],
    ids=["target", "actor", "time", "detail"],
)
def test_an_edited_entry_is_named(platform: Platform, store_url: str, edit: str) -> None:
    _log(platform)
    _sql(store_url, edit)
    ok, seq, problem = _report(platform)
    assert (ok, seq) == (False, 3)
    assert problem is not None and "entry 3 was edited" in problem


def test_an_edit_that_recomputes_its_own_hash_breaks_the_next_link(
    platform: Platform, store_url: str
) -> None:
    from lumos_ray.platform._audit import content_hash

    _log(platform)
    engine = sa.create_engine(store_url)
    try:
        with engine.begin() as c:
            row = c.execute(sa.text("SELECT * FROM audit_log WHERE seq = 3")).mappings().one()
            detail = (
                row["detail"] if not isinstance(row["detail"], str) else json.loads(row["detail"])
            )
            new = content_hash(
                row["prev_hash"], "acme", 3, row["ts"], row["actor"], row["action"], "run-X", detail
            )
            c.execute(
                sa.text("UPDATE audit_log SET target = 'run-X', hash = :h WHERE seq = 3"),
                {"h": new},
            )
    finally:
        engine.dispose()
    ok, seq, problem = _report(platform)
    assert (ok, seq) == (False, 4)
    assert problem is not None and "does not chain to entry 3" in problem


def test_a_deleted_entry_is_named(platform: Platform, store_url: str) -> None:
    _log(platform)
    _sql(store_url, "DELETE FROM audit_log WHERE seq = 3")
    ok, seq, problem = _report(platform)
    assert (ok, seq) == (False, 3)
    assert problem is not None and "entry 3 is missing (deleted)" in problem


def test_deleting_the_newest_entry_is_named(platform: Platform, store_url: str) -> None:
    _log(platform)
    _sql(store_url, "DELETE FROM audit_log WHERE seq = 5")
    ok, seq, problem = _report(platform)
    assert (ok, seq) == (False, 5)
    assert problem is not None and "entry 5 is missing (deleted)" in problem


def test_an_entry_inserted_in_the_middle_is_named(platform: Platform, store_url: str) -> None:
    _log(platform)
    _sql(
        store_url,
        # make room after entry 2, then insert a forged entry copying entry 2's hashes
        "UPDATE audit_log SET seq = seq + 100 WHERE seq >= 3",
        "UPDATE audit_log SET seq = seq - 99 WHERE seq >= 103",
        "INSERT INTO audit_log (tenant_id, seq, ts, actor, action, target, detail, "
        "prev_hash, hash) SELECT tenant_id, 3, ts, 'intruder', 'key.created', 'x', NULL, "
        "hash, hash FROM audit_log WHERE seq = 2",
    )
    ok, seq, problem = _report(platform)
    assert (ok, seq) == (False, 3)
    assert problem is not None and "entry 3 was edited or inserted" in problem


def test_an_entry_appended_after_the_head_is_named(platform: Platform, store_url: str) -> None:
    _log(platform)
    _sql(
        store_url,
        "INSERT INTO audit_log (tenant_id, seq, ts, actor, action, target, detail, "
        "prev_hash, hash) SELECT tenant_id, 6, ts, actor, action, target, detail, hash, "
        "hash FROM audit_log WHERE seq = 5",
    )
    ok, seq, _ = _report(platform)
    assert (ok, seq) == (False, 6)


def test_tenants_have_separate_chains(platform: Platform, store_url: str) -> None:
    _log(platform, "acme")
    _log(platform, "globex", 3)
    _sql(store_url, "DELETE FROM audit_log WHERE tenant_id = 'globex' AND seq = 2")
    by_tenant = {r.tenant: r for r in platform.verify_audit()}
    assert by_tenant["acme"].ok and by_tenant["acme"].entries == 5
    assert (by_tenant["globex"].ok, by_tenant["globex"].first_bad_seq) == (False, 2)


def test_bad_audit_input_is_refused(platform: Platform) -> None:
    platform.create_tenant("acme")
    with pytest.raises(InputValidationError, match="Invalid audit action"):
        platform.audit("acme", "me", "Run Started!", "r1")
    with pytest.raises(InputValidationError, match="JSON object"):
        platform.audit("acme", "me", "run.started", "r1", ["not", "a", "dict"])  # type: ignore[arg-type]


def test_lumos_audit_verify_fails_and_names_the_entry(
    platform: Platform,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LUMOS_STORE_URL", store_url)
    _log(platform)
    assert _lumos("audit", "verify", "--json") == 0
    assert json.loads(capsys.readouterr().out)[0]["ok"] is True

    _sql(store_url, "UPDATE audit_log SET target = 'run-X' WHERE seq = 4")
    assert _lumos("audit", "verify") == 1
    assert "acme: BROKEN at entry 4: entry 4 was edited" in capsys.readouterr().err


def _lumos(*argv: str) -> int:
    """Run the CLI in-process; its exit status."""
    try:
        main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
