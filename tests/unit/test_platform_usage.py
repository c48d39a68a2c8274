"""Monthly plan quotas and daily metering, on SQLite and PostgreSQL, including
counts written by several processes at once (atomic SQL, no lost updates)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray.errors import ConfigError, InputValidationError, QuotaExceededError
from lumos_ray.platform import Platform, default_plans, load_plans
from tests.unit._platform_helpers import SMALL_PLANS, charge_worker, record_worker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def platform(store_backend: str, store_url: str) -> Iterator[Platform]:
    p = Platform(store_url, plans=SMALL_PLANS, shared=False)
    yield p
    p.close()


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def test_the_call_over_the_monthly_quota_is_refused_with_retry_after(platform: Platform) -> None:
    platform.create_tenant("acme", "tiny")  # 25 calls a month
    for _ in range(25):
        platform.charge("acme")
    with pytest.raises(QuotaExceededError) as info:
        platform.charge("acme")
    err = info.value
    assert err.details["metric"] == "requests" and err.details["limit"] == 25
    assert 1 <= err.details["retry_after_s"] <= 31 * 86400
    (day,) = platform.usage("acme")
    assert day.requests == 25  # the refused call was not counted
    assert platform.quota_status("acme")["used"]["requests"] == 25


def test_a_charge_that_would_cross_the_limit_counts_nothing(platform: Platform) -> None:
    platform.create_tenant("acme", "tiny")
    platform.charge("acme", requests=20)
    with pytest.raises(QuotaExceededError):
        platform.charge("acme", requests=6)
    platform.charge("acme", requests=5)
    assert platform.usage("acme")[0].requests == 25


def test_tokens_recorded_after_responses_use_up_a_token_quota(platform: Platform) -> None:
    platform.create_tenant("acme", "tiny")  # 100 tokens a month
    platform.charge("acme")
    platform.record_usage("acme", prompt_tokens=60, completion_tokens=40)
    with pytest.raises(QuotaExceededError) as info:
        platform.charge("acme")
    assert info.value.details["metric"] == "tokens"


def test_unlimited_plans_are_metered_but_never_refused(platform: Platform) -> None:
    platform.create_tenant("big", "enterprise")
    platform.charge("big", requests=1_000_000, prompt_tokens=5)
    platform.charge("big")
    status = platform.quota_status("big")
    assert status["limits"]["requests"] is None
    assert status["used"]["requests"] == 1_000_001


def test_usage_is_kept_per_tenant_and_day(platform: Platform) -> None:
    platform.create_tenant("acme")
    platform.create_tenant("globex")
    platform.charge("acme", requests=2, prompt_tokens=7, completion_tokens=3, embedding_inputs=4)
    platform.record_usage("acme", agent_seconds=1.5, storage_bytes=1000)
    platform.record_usage("acme", storage_bytes=800)  # a gauge: the latest value wins
    platform.record_usage("globex", requests=1)
    acme = platform.usage("acme")
    assert [d.to_dict() for d in acme] == [
        {
            "tenant": "acme",
            "day": _today(),
            "requests": 2,
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "embedding_inputs": 4,
            "agent_seconds": 1.5,
            "storage_bytes": 800,
        }
    ]
    assert [(d.tenant, d.requests) for d in platform.usage()] == [("acme", 2), ("globex", 1)]
    assert platform.usage("acme", since="2000-01-01", until="2000-12-31") == []


@pytest.mark.parametrize(
    "kwargs",
    [{"requests": -1}, {"prompt_tokens": 1.5}, {"requests": True}],
    ids=["negative", "float", "bool"],
)
def test_bad_amounts_are_refused(platform: Platform, kwargs: dict[str, object]) -> None:
    with pytest.raises(InputValidationError, match="non-negative integer"):
        platform.charge("acme", **kwargs)  # type: ignore[arg-type]


def test_concurrent_charges_from_several_processes_never_overshoot(
    platform: Platform, store_url: str
) -> None:
    platform.create_tenant("acme", "tiny")  # 25 calls a month
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(charge_worker, [(store_url, "acme", 10)] * 4)
    accepted = sum(ok for ok, _ in results)
    refused = sum(no for _, no in results)
    assert (accepted, refused) == (25, 15)
    assert platform.usage("acme")[0].requests == 25
    assert platform.quota_status("acme")["used"]["requests"] == 25


def test_concurrent_metering_from_several_processes_loses_nothing(
    platform: Platform, store_url: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        done = pool.starmap(record_worker, [(store_url, "acme", 15)] * 4)
    assert sum(done) == 60
    (day,) = platform.usage("acme")
    assert (day.prompt_tokens, day.agent_seconds) == (180, 30.0)


def test_the_plans_file_is_the_built_in_defaults() -> None:
    assert load_plans(REPO / "configs/platform/plans.yaml") == default_plans()
    free = default_plans().plans["free"]
    assert (free.api_calls_per_month, free.concurrent_agents, free.storage_bytes) == (
        10_000,
        3,
        10**9,
    )


def test_a_bad_plans_file_names_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "plans.yaml"
    bad.write_text("plans:\n  free:\n    api_calls_per_month: 10\n    concurrent_agents: 1\n"
                   "    storage_bytes: lots\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"plans\.yaml: plans\.free\.storage_bytes"):
        load_plans(bad)
    bad.write_text("default_plan: gold\nplans: {}\n")
    with pytest.raises(ConfigError, match="default_plan 'gold' is not one of the plans"):
        load_plans(bad)


def test_unknown_plans_are_refused(platform: Platform) -> None:
    with pytest.raises(InputValidationError, match="Unknown plan 'gold'"):
        platform.create_tenant("acme", "gold")
    platform.create_tenant("acme")
    with pytest.raises(InputValidationError, match="Unknown plan"):
        platform.set_plan("acme", "gold")
    assert platform.set_plan("acme", "tiny").plan == "tiny"
    assert platform.audit_tail("acme")[-1].detail == {"from": "free", "to": "tiny"}
