"""The platform: tenants, users, API keys, roles, plan quotas, usage metering,
cluster-wide agent slots and a hash-chained audit log, kept in the store's database.

Entry points (the gateway, the CLI, the runner) code against :class:`Platform`::

    p = Platform()                                   # the settings' store, default plans
    t = p.create_tenant("acme", "free")
    key = p.create_key("acme", Role.DEVELOPER)       # key.secret_shown_once: give it out
    who = p.authenticate(key.secret_shown_once)      # AuthenticationError -> 401
    p.authorize(who, "run")                          # PermissionDeniedError -> 403
    p.charge(who)                                    # QuotaExceededError -> 429
    p.record_usage(who, prompt_tokens=12, completion_tokens=30)
    p.check_storage(who.tenant)                      # QuotaExceededError at the storage limit
    p.audit(who.tenant, who.actor, "run.started", run_id, {"workflow": "wf"})

Keys are stored hashed and shown once; every row is keyed by tenant. See
docs/platform.md.
"""

from __future__ import annotations

from lumos_ray.platform._audit import AUDIT_EVENTS
from lumos_ray.platform._keys import KEY_PREFIX
from lumos_ray.platform._ledger import QuotaLedger
from lumos_ray.platform._plans import PLANS_ENV, Plan, Plans, default_plans, load_plans
from lumos_ray.platform._platform import Platform, default_platform
from lumos_ray.platform._roles import ACTIONS
from lumos_ray.platform._storage import STORAGE_SCAN_S, StorageReport
from lumos_ray.platform._types import (
    AgentSlot,
    AuditEntry,
    AuditReport,
    CreatedKey,
    KeyInfo,
    Principal,
    Role,
    Tenant,
    UsageDay,
    User,
)

__all__ = [
    "ACTIONS",
    "AUDIT_EVENTS",
    "KEY_PREFIX",
    "PLANS_ENV",
    "STORAGE_SCAN_S",
    "AgentSlot",
    "AuditEntry",
    "AuditReport",
    "CreatedKey",
    "KeyInfo",
    "Plan",
    "Plans",
    "Platform",
    "Principal",
    "QuotaLedger",
    "Role",
    "StorageReport",
    "Tenant",
    "UsageDay",
    "User",
    "acquire_agent_slot",
    "default_plans",
    "default_platform",
    "load_plans",
    "release_agent_slot",
    "renew_agent_slot",
]


def acquire_agent_slot(tenant: str, *, holder: str | None = None, ttl_s: float = 60.0) -> AgentSlot:
    """Take one of ``tenant``'s concurrent-agent slots, cluster-wide (through the
    settings' store): AgentConcurrencyError when its plan's limit is already running.
    Renew it while the agent runs (:func:`renew_agent_slot`), release it after."""
    return default_platform().acquire_agent_slot(tenant, holder=holder, ttl_s=ttl_s)


def renew_agent_slot(tenant: str, slot: AgentSlot | str, *, ttl_s: float = 60.0) -> AgentSlot:
    """Extend a held slot's lease (NotFoundError once it has expired)."""
    return default_platform().renew_agent_slot(tenant, slot, ttl_s=ttl_s)


def release_agent_slot(tenant: str, slot: AgentSlot | str) -> bool:
    """Give a slot back; False when it was not held any more."""
    return default_platform().release_agent_slot(tenant, slot)
