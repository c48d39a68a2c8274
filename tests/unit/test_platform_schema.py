"""The platform's tables as a reader of the database sees them (SQLite and
PostgreSQL): every one is written by the platform, keyed by tenant first, holds text,
numbers and JSON only, and no key secret anywhere. The module-level agent-slot
functions use the settings' store."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lumos_ray import platform as platform_pkg
from lumos_ray.errors import AgentConcurrencyError
from lumos_ray.platform import Platform
from lumos_ray.store._schema import PLATFORM_TABLES
from tests.unit._platform_helpers import SMALL_PLANS


@pytest.fixture
def platform(store_backend: str, store_url: str) -> Iterator[Platform]:
    p = Platform(store_url, plans=SMALL_PLANS, shared=False)
    yield p
    p.close()


def test_platform_rows_are_tenant_keyed_json_and_hold_no_secret(
    platform: Platform, store_url: str
) -> None:
    platform.create_tenant("acme")
    platform.create_user("acme", "ada", "admin")
    key = platform.create_key("acme", "admin", user="ada", name="ops")
    secret = key.secret_shown_once.split("_", 2)[2]
    platform.charge("acme", prompt_tokens=3)
    platform.record_usage("acme", storage_bytes=12)
    platform.acquire_agent_slot("acme", holder="agent-0")
    json_cols = {
        (t.name, c.name) for t in PLATFORM_TABLES for c in t.columns if isinstance(c.type, sa.JSON)
    }
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as c:
            for t in PLATFORM_TABLES:
                pk = sa.inspect(c).get_pk_constraint(t.name)["constrained_columns"]
                assert pk[0] == "tenant_id", t.name
                rows = c.execute(sa.text(f"SELECT * FROM {t.name}")).mappings().all()
                assert rows, t.name
                for row in rows:
                    assert row["tenant_id"] == "acme"
                    for col, v in row.items():
                        assert not isinstance(v, bytes | memoryview), (t.name, col)
                        assert secret not in str(v), (t.name, col)
                        if (t.name, col) in json_cols and isinstance(v, str):
                            json.loads(v)
    finally:
        engine.dispose()


def test_module_level_slot_functions_use_the_settings_store(
    store_url: str, monkeypatch: pytest.MonkeyPatch, platform: Platform
) -> None:
    monkeypatch.setenv("LUMOS_STORE_URL", store_url)
    monkeypatch.delenv("LUMOS_PLANS_FILE", raising=False)
    platform.create_tenant("acme", "free")
    slots = [platform_pkg.acquire_agent_slot("acme") for _ in range(3)]
    with pytest.raises(AgentConcurrencyError):
        platform_pkg.acquire_agent_slot("acme")
    assert len(platform.agent_slots("acme")) == 3
    platform_pkg.renew_agent_slot("acme", slots[0])
    assert platform_pkg.release_agent_slot("acme", slots[0]) is True
    assert len(platform.agent_slots("acme")) == 2
