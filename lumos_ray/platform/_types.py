"""The platform's value types: roles, principals, tenants, keys, slots, usage, audit.

Plain frozen dataclasses (picklable across Ray, cheap to build per request). Nothing
here ever holds a key's secret except :class:`CreatedKey`, which exists exactly once,
when the key is made, and hides the secret from ``repr``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AgentSlot",
    "AuditEntry",
    "AuditReport",
    "CreatedKey",
    "KeyInfo",
    "Principal",
    "Role",
    "Tenant",
    "UsageDay",
    "User",
]


class Role(enum.StrEnum):
    """What a key may do; each role includes everything the ones below it may do."""

    VIEWER = "viewer"
    DEVELOPER = "developer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """0 viewer, 1 developer, 2 admin."""
        return _RANK[self]


_RANK = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """Who is calling, as proven by an API key: one tenant, one role, one key."""

    tenant: str
    role: Role
    key_id: str

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key_id}"


@dataclass(frozen=True)
class Tenant:
    """A tenant: its name (the id every stored row is keyed by) and its plan."""

    name: str
    plan: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class User:
    """A person (or service) of a tenant; keys may be made for a user."""

    tenant: str
    name: str
    role: Role
    created_at: float


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: never its secret, never its hash."""

    tenant: str
    key_id: str
    role: Role
    name: str | None
    user: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def status(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked`` at time ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "key_id": self.key_id,
            "role": self.role.value,
            "name": self.name,
            "user": self.user,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "status": self.status(now),
        }


@dataclass(frozen=True)
class CreatedKey:
    """A key just made. ``secret_shown_once`` is the whole key to give the client
    (``lumos_<key_id>_<secret>``); only its hash is stored, so it cannot be shown again."""

    key_id: str
    secret_shown_once: str = field(repr=False)
    tenant: str
    role: Role
    name: str | None
    expires_at: float | None
    created_at: float


@dataclass(frozen=True)
class AgentSlot:
    """A lease on one of a tenant's concurrent-agent slots, valid until ``expires_at``
    unless renewed (:meth:`Platform.renew_agent_slot`)."""

    tenant: str
    slot_id: str
    holder: str | None
    expires_at: float


@dataclass(frozen=True)
class UsageDay:
    """One tenant's metered usage on one UTC day."""

    tenant: str
    day: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    embedding_inputs: int
    agent_seconds: float
    storage_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "day": self.day,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "embedding_inputs": self.embedding_inputs,
            "agent_seconds": self.agent_seconds,
            "storage_bytes": self.storage_bytes,
        }


@dataclass(frozen=True)
class AuditEntry:
    """One audit log row, as stored."""

    tenant: str
    seq: int
    ts: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AuditReport:
    """What :meth:`Platform.verify_audit` found for one tenant's chain.

    ``ok`` False names the first bad entry (``first_bad_seq``) and what is wrong with
    it (``problem``). ``head_hash`` is the hash of the last entry: record it outside
    the database to detect a rewrite of the whole chain later."""

    tenant: str
    ok: bool
    entries: int
    first_bad_seq: int | None
    problem: str | None
    head_seq: int
    head_hash: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "ok": self.ok,
            "entries": self.entries,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
        }
