"""API keys and roles, on SQLite and PostgreSQL: keys are stored hashed and shown
once; a missing, malformed, unknown, wrong, expired or revoked key is refused; roles
allow what the fixed table says; a key acts only in its own tenant."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from lumos_ray.errors import (
    AuthenticationError,
    AuthError,
    InputValidationError,
    NotFoundError,
    PermissionDeniedError,
)
from lumos_ray.platform import ACTIONS, Platform, Principal, Role
from tests.unit._platform_helpers import SMALL_PLANS


@pytest.fixture
def platform(store_backend: str, store_url: str) -> Iterator[Platform]:
    p = Platform(store_url, plans=SMALL_PLANS, shared=False)
    yield p
    p.close()


def _raw(url: str, sql: str, **params: object) -> list[sa.Row]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            result = c.execute(sa.text(sql), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def test_a_created_key_authenticates_as_its_tenant_and_role(platform: Platform) -> None:
    platform.create_tenant("acme", "free")
    key = platform.create_key("acme", "developer", name="ci")
    assert key.secret_shown_once.startswith(f"lumos_{key.key_id}_")
    assert key.secret_shown_once not in repr(key)
    who = platform.authenticate(key.secret_shown_once)
    assert who == Principal(tenant="acme", role=Role.DEVELOPER, key_id=key.key_id)
    assert platform.authenticate(f"Bearer {key.secret_shown_once}") == who


def test_the_secret_is_stored_only_as_a_hash(platform: Platform, store_url: str) -> None:
    platform.create_tenant("acme")
    key = platform.create_key("acme", Role.ADMIN)
    secret = key.secret_shown_once.split("_", 2)[2]
    for table in ("api_keys", "audit_log", "audit_heads", "tenants"):
        for row in _raw(store_url, f"SELECT * FROM {table}"):
            assert all(secret not in str(v) for v in row), table
    (stored,) = _raw(store_url, "SELECT secret_hash FROM api_keys")
    assert stored[0] == hashlib.sha256(f"{key.key_id}:{secret}".encode()).hexdigest()
    listed = platform.list_keys("acme")
    assert [k.key_id for k in listed] == [key.key_id]
    assert secret not in repr(listed) and "secret_hash" not in repr(listed)


@pytest.mark.parametrize(
    "raw",
    [None, "", "   ", "not-a-key", "lumos_zz_short", "Bearer "],
    ids=["none", "empty", "blank", "garbage", "malformed", "bearer-only"],
)
def test_missing_or_malformed_keys_are_refused(platform: Platform, raw: str | None) -> None:
    with pytest.raises(AuthenticationError) as info:
        platform.authenticate(raw)
    assert isinstance(info.value, AuthError)  # the gateway's existing 401 mapping applies


def test_unknown_and_wrong_secret_keys_are_refused_alike(platform: Platform) -> None:
    platform.create_tenant("acme")
    key = platform.create_key("acme", "viewer")
    unknown = "lumos_0123456789abcdef_" + "A" * 43
    wrong = f"lumos_{key.key_id}_" + "B" * 43
    messages = set()
    for raw in (unknown, wrong):
        with pytest.raises(AuthenticationError) as info:
            platform.authenticate(raw)
        messages.add(info.value.message)
        assert "B" * 10 not in str(info.value)
    assert messages == {"Invalid API key."}


def test_revoked_keys_are_refused_and_the_revocation_is_audited(platform: Platform) -> None:
    platform.create_tenant("acme")
    key = platform.create_key("acme", "developer")
    info = platform.revoke_key("acme", key.key_id)
    assert info.revoked_at is not None and info.status(time.time()) == "revoked"
    with pytest.raises(AuthenticationError, match="revoked"):
        platform.authenticate(key.secret_shown_once)
    actions = [e.action for e in platform.audit_tail("acme")]
    assert actions == ["tenant.created", "key.created", "key.revoked", "login.failed"]


def test_expired_keys_are_refused(platform: Platform, store_url: str) -> None:
    platform.create_tenant("acme")
    key = platform.create_key("acme", "developer", expires_at=time.time() + 3600)
    assert platform.authenticate(key.secret_shown_once).key_id == key.key_id
    _raw(store_url, "UPDATE api_keys SET expires_at = :t", t=time.time() - 1)
    with pytest.raises(AuthenticationError, match="expired"):
        platform.authenticate(key.secret_shown_once)
    with pytest.raises(InputValidationError, match="in the past"):
        platform.create_key("acme", "developer", expires_at=time.time() - 10)


def test_login_failures_are_audited_once_per_key_per_interval(platform: Platform) -> None:
    platform.create_tenant("acme")
    key = platform.create_key("acme", "developer")
    wrong = f"lumos_{key.key_id}_" + "C" * 43
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            platform.authenticate(wrong)
    failures = [e for e in platform.audit_tail("acme", 50) if e.action == "login.failed"]
    assert len(failures) == 1
    assert failures[0].detail == {"reason": "wrong secret"}


def test_a_tenant_cannot_revoke_or_list_another_tenants_key(platform: Platform) -> None:
    platform.create_tenant("acme")
    platform.create_tenant("globex")
    key = platform.create_key("acme", "admin")
    with pytest.raises(NotFoundError):
        platform.revoke_key("globex", key.key_id)
    assert platform.list_keys("globex") == []
    assert platform.authenticate(key.secret_shown_once).tenant == "acme"  # still live


def test_keys_need_an_existing_tenant_and_a_known_role(platform: Platform) -> None:
    with pytest.raises(NotFoundError, match="No tenant 'nobody'"):
        platform.create_key("nobody", "admin")
    platform.create_tenant("acme")
    with pytest.raises(InputValidationError, match="Unknown role"):
        platform.create_key("acme", "owner")


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_roles_allow_exactly_the_actions_of_the_table(role: Role) -> None:
    p = Platform.__new__(Platform)  # authorize reads no database
    who = Principal("acme", role, "0123456789abcdef")
    allowed = set()
    for action in ACTIONS:
        try:
            p.authorize(who, action)
            allowed.add(action)
        except PermissionDeniedError:
            pass
    expected = {
        Role.VIEWER: {"read"},
        Role.DEVELOPER: {"read", "run", "resume", "cancel", "submit", "chat", "embed"},
        Role.ADMIN: set(ACTIONS),
    }[role]
    assert allowed == expected
    assert {"keys", "tenants", "plans", "audit"} <= set(ACTIONS)


def test_authorize_refuses_another_tenant_and_unknown_actions() -> None:
    p = Platform.__new__(Platform)
    admin = Principal("acme", Role.ADMIN, "0123456789abcdef")
    p.authorize(admin, "keys", tenant="acme")
    with pytest.raises(PermissionDeniedError, match="cannot act on tenant 'globex'"):
        p.authorize(admin, "read", tenant="globex")
    with pytest.raises(InputValidationError, match="Unknown action"):
        p.authorize(admin, "delete_everything")
