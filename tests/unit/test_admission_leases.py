"""Admission leases: the app's admission core lends a replica a share of a key's rate
limit and its tenant's quota, so most calls are admitted without a round trip, and
still no limit is passed and every call is counted. Two gateway replicas
(``ClusterAdmission``) over one ``AdmissionCore`` with a real quota ledger on SQLite;
the Ray actor call between them is replaced by a direct call (Ray is not under test
here: the integration test of the gateway platform runs the same over real Serve)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from lumos_ray.errors import QuotaExceededError
from lumos_ray.platform import Plan, Plans, Platform
from lumos_ray.serve import _admission
from lumos_ray.serve._admission import (
    ADMIT_AND_LEASE,
    LEASE_MIN,
    METER_S,
    AdmissionCore,
    ClusterAdmission,
    LedgerSpec,
)

LIMIT = 200


class _Method:
    def __init__(self, fn: Any, actor: _Actor, name: str) -> None:
        self.fn, self.actor, self.name = fn, actor, name

    async def remote(self, *args: Any) -> Any:
        self.actor.calls.append(self.name)
        self.actor.args.append((self.name, args))
        await asyncio.sleep(0.001)  # a round trip: other calls queue behind it
        return self.fn(*args)


class _Actor:
    """The admission actor's methods, called in this process."""

    def __init__(self, core: AdmissionCore) -> None:
        self.core = core
        self.calls: list[str] = []
        self.args: list[tuple[str, tuple[Any, ...]]] = []  # (method, its arguments)

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self.core, name), self, name)


@pytest.fixture
def core(tmp_path: Path) -> Any:
    plans = Plans(
        default_plan="small",
        plans={
            "small": Plan(api_calls_per_month=LIMIT, concurrent_agents=1, storage_bytes=1000),
            "open": Plan(api_calls_per_month=None, concurrent_agents=1, storage_bytes=1000),
        },
    )
    url = f"sqlite:///{tmp_path / 'lease.db'}"
    p = Platform(url, plans=plans, shared=False)
    p.create_tenant("acme", "small")
    p.create_tenant("big", "open")
    c = AdmissionCore(LedgerSpec(url, plans, flush_s=60))
    yield c, p
    c.close()


def _replicas(core: AdmissionCore, n: int, key_rpm: int | None = None) -> list[ClusterAdmission]:
    actor = _Actor(core)
    out = []
    for _ in range(n):
        adm = ClusterAdmission("app", key_rpm, None, None)
        adm._actor = actor
        out.append(adm)
    return out


async def _hammer(adm: ClusterAdmission, key: str, tenant: str, most: int) -> int:
    """Calls one after another until refused (or ``most``); how many were admitted."""
    ok = 0
    for _ in range(most):
        try:
            await adm.admit(key, tenant, counts={"requests": 1})
        except QuotaExceededError:
            break
        ok += 1
    return ok


def test_two_replicas_admit_exactly_the_quota_and_the_store_counts_each_call(core: Any) -> None:
    c, platform = core
    a, b = _replicas(c, 2)

    async def main() -> list[int]:
        got = await asyncio.gather(_hammer(a, "k1", "acme", LIMIT), _hammer(b, "k2", "acme", LIMIT))
        await a.flush()
        await b.flush()
        return list(got)

    got = asyncio.run(main())
    assert sum(got) == LIMIT, got  # not one more, and none refused below the limit
    assert a._actor.calls.count("admit_lease") < LIMIT // 2  # leases did most of it
    assert platform.quota_status("acme")["used"]["requests"] == LIMIT
    assert sum(d.requests for d in platform.usage("acme")) == LIMIT
    assert not c.grants  # every lease settled


def test_most_calls_skip_the_round_trip_when_far_from_the_limit(core: Any) -> None:
    c, platform = core
    (a,) = _replicas(c, 1)
    actor = a._actor

    async def main() -> None:
        for _ in range(300):
            await a.admit("k", "big", counts={"requests": 1})
        await a.flush()

    asyncio.run(main())
    asks = actor.calls.count("admit_lease")
    assert asks < 300 // LEASE_MIN, asks  # leases covered the rest
    assert platform.quota_status("big")["used"]["requests"] == 300


def test_a_rate_limited_key_gets_its_rpm_across_replicas_and_no_more(core: Any) -> None:
    c, _ = core
    rpm = 40
    a, b = _replicas(c, 2, key_rpm=rpm)

    async def hit(adm: ClusterAdmission) -> bool:
        try:
            await adm.admit("shared-key", "big", counts=None)
        except QuotaExceededError:
            return False
        return True

    async def main() -> list[bool]:
        out = []
        for _ in range(rpm):  # waves of two concurrent calls, one per replica
            out += await asyncio.gather(hit(a), hit(b))
        return out

    results = asyncio.run(main())
    # The bucket refills rpm/60 tokens a second while this runs (well under 2 s).
    assert rpm <= results.count(True) <= rpm + 2, results.count(True)


def test_a_lease_that_is_never_settled_counts_as_used(core: Any) -> None:
    c, platform = core
    verdicts = c.admit_lease(
        [("k", "acme", True, {"requests": 1}, ADMIT_AND_LEASE)], None, None, "r1"
    )
    ((wait, err, lease, _),) = verdicts
    assert not wait and err is None and lease is not None
    lease_id, calls, _ = lease
    assert calls >= LEASE_MIN
    # Lent calls count as used for everyone else at once.
    assert c.ledger.request_headroom("acme") == LIMIT - 1 - calls
    c.grants[lease_id].ends -= 3600  # its replica died long ago
    c.flush()
    assert platform.quota_status("acme")["used"]["requests"] == 1 + calls


def test_unused_lease_tokens_and_calls_go_back(core: Any) -> None:
    c, _ = core
    ((_, _, lease, _),) = c.admit_lease(
        [("k", "acme", True, {"requests": 1}, ADMIT_AND_LEASE)], 60, None, "r1"
    )
    assert lease is not None
    lease_id, calls, _ = lease
    now = time.monotonic()
    assert c.buckets.available("k:k", 60, now) < 60 - calls  # lent tokens are taken
    c.settle([(lease_id, 1)])
    assert c.ledger.request_headroom("acme") == LIMIT - 2
    assert c.buckets.available("k:k", 60, now) >= 60 - 2  # the unused ones came back
    c.settle([(lease_id, 1)])  # a second settle of the same lease changes nothing
    assert c.ledger.request_headroom("acme") == LIMIT - 2


def test_metering_of_many_answers_reaches_the_actor_summed_in_one_call(core: Any) -> None:
    c, platform = core
    (a,) = _replicas(c, 1)
    actor = a._actor

    async def main() -> None:
        for i in range(50):
            a.record("big", {"prompt_tokens": 3, "completion_tokens": i})
            await asyncio.sleep(0)
        a.record("acme", {"prompt_tokens": 1})
        await asyncio.sleep(METER_S + 0.2)  # the interval passes: sent without a flush

    asyncio.run(main())
    records = [args for name, args in actor.args if name == "record"]
    assert len(records) == 1, records  # one call for 51 answers of two tenants
    assert dict(records[0][0]) == {
        "big": {"prompt_tokens": 150, "completion_tokens": sum(range(50))},
        "acme": {"prompt_tokens": 1},
    }
    c.flush()
    (day,) = platform.usage("big")
    assert (day.prompt_tokens, day.completion_tokens) == (150, sum(range(50)))


def test_a_steady_key_gets_its_next_lease_before_the_current_one_ends(
    core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls at a steady pace for two lease lifetimes: only the first waits for the
    actor; the next leases are asked for in the background (LEASE_ONLY) once half of
    a lease's time is gone, not after it ended. (Short leases that never go back
    idle: a stall under 0.3 s between calls does not change the outcome.)"""
    c, platform = core
    monkeypatch.setattr(_admission, "LEASE_S", 0.6)
    monkeypatch.setattr(_admission, "LEASE_IDLE_S", 10.0)
    (a,) = _replicas(c, 1)
    actor = a._actor

    async def main() -> None:
        for _ in range(60):
            await a.admit("k", "big", counts={"requests": 1})
            await asyncio.sleep(0.02)
        await a.flush()

    asyncio.run(main())
    kinds = [item[4] for name, args in actor.args if name == "admit_lease" for item in args[0]]
    assert kinds.count(ADMIT_AND_LEASE) == 1, kinds
    assert len(kinds) >= 3, kinds  # renewed while the calls went on
    assert platform.quota_status("big")["used"]["requests"] == 60


def test_hand_over_settles_leases_and_sends_summed_metering_at_once(core: Any) -> None:
    c, platform = core
    (a,) = _replicas(c, 1)

    async def main() -> None:
        await a.admit("k", "big", counts={"requests": 1})
        a.record("big", {"completion_tokens": 5})
        await a.hand_over()

    asyncio.run(main())
    assert not c.grants  # the lease came back with one call used
    c.flush()
    (day,) = platform.usage("big")
    assert (day.requests, day.completion_tokens) == (1, 5)


def test_admit_now_admits_from_a_held_lease_only_and_counts_every_call(core: Any) -> None:
    """The gateway's await-free path: False (ask the actor) until a lease is held, and
    for calls a lease cannot cover; True from the lease, each call counted once."""
    c, platform = core
    (a,) = _replicas(c, 1)
    one = {"requests": 1}

    async def main() -> tuple[list[bool], int]:
        before = [a.admit_now("k", "big", counts=one)]  # no lease yet
        await a.admit("k", "big", counts=one)  # asks, and is lent a lease
        asks = a._actor.calls.count("admit_lease")
        fast = [a.admit_now("k", "big", counts=one) for _ in range(20)]
        other = a.admit_now("k", "big", counts={"requests": 1, "tokens": 5})
        await a.flush()
        assert a._actor.calls.count("admit_lease") - asks <= 1  # at most a renewal
        return [*before, *fast, other], asks

    got, asks = asyncio.run(main())
    assert got[0] is False and all(got[1:21]) and got[21] is False
    assert asks == 1
    assert platform.quota_status("big")["used"]["requests"] == 21  # 1 asked + 20 leased
