"""`lumos tenants|keys|usage|audit` against a store on SQLite and PostgreSQL: the key
is printed once and works; --json is JSON only; usage exports as CSV and JSON; errors
are a message and a fix, exit status 1."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import pytest

from lumos_ray.cli import main
from lumos_ray.platform import Platform
from tests.unit._platform_helpers import SMALL_PLANS


def _lumos(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def store(store_backend: str, store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LUMOS_STORE_URL", store_url)
    monkeypatch.delenv("LUMOS_PLANS_FILE", raising=False)
    return store_url


def test_tenants_and_keys_round_trip(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _lumos(capsys, "tenants", "create", "acme", "--plan", "standard")[0] == 0
    code, out, _ = _lumos(capsys, "tenants", "list", "--json")
    assert code == 0 and [t["tenant"] for t in json.loads(out)] == ["acme"]

    code, out, _ = _lumos(capsys, "keys", "create", "acme", "--role", "viewer", "--json")
    created = json.loads(out)
    assert code == 0 and created["key"].startswith(f"lumos_{created['key_id']}_")
    p = Platform(store, plans=SMALL_PLANS, shared=False)
    try:
        assert p.authenticate(created["key"]).role.value == "viewer"
    finally:
        p.close()

    code, out, _ = _lumos(capsys, "keys", "list", "acme", "--json")
    (listed,) = json.loads(out)
    assert listed["status"] == "active" and created["key"] not in out

    assert _lumos(capsys, "keys", "revoke", "acme", created["key_id"])[0] == 0
    code, out, _ = _lumos(capsys, "keys", "list", "acme", "--json")
    assert json.loads(out)[0]["status"] == "revoked"

    code, out, _ = _lumos(capsys, "audit", "tail", "--tenant", "acme", "--json")
    assert [e["action"] for e in json.loads(out)] == [
        "tenant.created",
        "key.created",
        "key.revoked",
    ]
    assert json.loads(out)[0]["actor"].startswith("cli")


def test_errors_are_a_message_and_a_fix(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _lumos(capsys, "keys", "create", "nobody")
    assert code == 1 and "No tenant 'nobody'" in err and "How to fix" in err
    code, out, _ = _lumos(capsys, "tenants", "create", "acme", "--plan", "gold", "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "LUMOS-E012"


def test_usage_show_and_export(
    store: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    p = Platform(store, plans=SMALL_PLANS, shared=False)
    try:
        p.create_tenant("acme")
        p.charge("acme", requests=3, prompt_tokens=10)
        p.record_usage("acme", completion_tokens=4, agent_seconds=2.0)
    finally:
        p.close()
    code, out, _ = _lumos(capsys, "usage", "show", "--tenant", "acme", "--json")
    data = json.loads(out)
    assert code == 0 and data["days"][0]["requests"] == 3
    assert data["quota"]["limits"]["requests"] == 10_000

    code, out, _ = _lumos(capsys, "usage", "export", "--format", "csv")
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert (row["tenant"], row["requests"], row["completion_tokens"]) == ("acme", "3", "4")

    target = tmp_path / "usage.json"
    code, _, _ = _lumos(capsys, "usage", "export", "--format", "json", "-o", str(target))
    assert code == 0 and json.loads(target.read_text())[0]["prompt_tokens"] == 10
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
