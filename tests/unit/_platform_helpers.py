"""Shared pieces of the platform tests (tests/unit/test_platform_*.py).

Worker functions run in separate processes (multiprocessing ``spawn``), so they live
in an importable module, not inside a test.
"""

from __future__ import annotations

from lumos_ray.errors import AgentConcurrencyError, QuotaExceededError
from lumos_ray.platform import Plan, Plans, Platform

__all__ = ["SMALL_PLANS", "acquire_worker", "charge_worker", "record_worker"]

#: Small limits so that tests reach them quickly; "free" keeps the brief's 3 agents.
SMALL_PLANS = Plans(
    default_plan="free",
    plans={
        "free": Plan(api_calls_per_month=10_000, concurrent_agents=3, storage_bytes="1 GB"),
        "tiny": Plan(
            api_calls_per_month=25,
            concurrent_agents=1,
            storage_bytes=1000,
            tokens_per_month=100,
        ),
        "enterprise": Plan(api_calls_per_month=None, concurrent_agents=None, storage_bytes=None),
    },
)


def charge_worker(url: str, tenant: str, n: int) -> tuple[int, int]:
    """Charge one request ``n`` times; (accepted, refused)."""
    p = Platform(url, plans=SMALL_PLANS, shared=False)
    ok = refused = 0
    try:
        for _ in range(n):
            try:
                p.charge(tenant)
                ok += 1
            except QuotaExceededError:
                refused += 1
    finally:
        p.close()
    return ok, refused


def record_worker(url: str, tenant: str, n: int) -> int:
    """Record 3 prompt tokens and 0.5 agent-seconds ``n`` times."""
    p = Platform(url, plans=SMALL_PLANS, shared=False)
    try:
        for _ in range(n):
            p.record_usage(tenant, prompt_tokens=3, agent_seconds=0.5)
    finally:
        p.close()
    return n


def acquire_worker(url: str, tenant: str, n: int) -> int:
    """Try to take ``n`` agent slots (never releasing); how many were granted."""
    p = Platform(url, plans=SMALL_PLANS, shared=False)
    got = 0
    try:
        for _ in range(n):
            try:
                p.acquire_agent_slot(tenant, ttl_s=600)
                got += 1
            except AgentConcurrencyError:
                pass
    finally:
        p.close()
    return got
