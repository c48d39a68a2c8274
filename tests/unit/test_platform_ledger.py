"""QuotaLedger: the plan quota decided in memory, written to the store in batches
(what the gateway's admission actor runs), over a real SQLite store in tmp_path."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lumos_ray.errors import QuotaExceededError
from lumos_ray.platform import Plan, Plans, Platform, QuotaLedger

LIMIT = 50


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    plans = Plans(
        default_plan="tiny",
        plans={
            "tiny": Plan(
                api_calls_per_month=LIMIT,
                concurrent_agents=1,
                storage_bytes=1000,
                tokens_per_month=100,
            )
        },
    )
    p = Platform(f"sqlite:///{tmp_path / 'ledger.db'}", plans=plans, shared=False)
    p.create_tenant("acme", "tiny")
    return p


def test_exactly_the_limit_is_admitted_under_threads_and_written_by_flush(
    platform: Platform,
) -> None:
    ledger = QuotaLedger(platform)  # no thread: flushes only when asked

    def one(_: int) -> bool:
        try:
            ledger.charge("acme", {"requests": 1})
        except QuotaExceededError as err:
            assert err.details["metric"] == "requests" and err.details["retry_after_s"] >= 1
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(LIMIT + 20)))
    assert results.count(True) == LIMIT
    assert platform.quota_status("acme")["used"]["requests"] == 0  # nothing written yet
    assert ledger.flush() == 2  # one month row set, one day row
    assert platform.quota_status("acme")["used"]["requests"] == LIMIT
    assert sum(d.requests for d in platform.usage("acme")) == LIMIT
    assert ledger.flush() == 0  # nothing new: no transaction


def test_counts_already_in_the_store_and_other_writers_are_respected(
    platform: Platform,
) -> None:
    for _ in range(10):
        platform.charge("acme")  # before the ledger exists: loaded on first use
    ledger = QuotaLedger(platform)
    ledger.charge("acme", {"requests": 1})
    assert ledger.quota_used("acme")["requests"] == 11
    for _ in range(30):
        platform.charge("acme")  # another process charging the store directly
    ledger.flush()  # re-reads the stored totals: 10 + 1 + 30
    assert ledger.quota_used("acme")["requests"] == 41
    platform.charge("acme")
    assert ledger.flush() == 0  # nothing to write: the totals are still re-read
    assert ledger.quota_used("acme")["requests"] == 42
    admitted = 0
    for _ in range(20):
        try:
            ledger.charge("acme", {"requests": 1})
            admitted += 1
        except QuotaExceededError:
            pass
    assert admitted == LIMIT - 42
    ledger.close()
    assert platform.quota_status("acme")["used"]["requests"] == LIMIT


def test_recorded_tokens_count_towards_the_quota_and_are_metered(platform: Platform) -> None:
    ledger = QuotaLedger(platform)
    ledger.charge("acme", {"requests": 1})
    ledger.record("acme", {"prompt_tokens": 60, "completion_tokens": 40})
    with pytest.raises(QuotaExceededError) as info:
        ledger.charge("acme", {"requests": 1})  # tokens are used up: refused
    assert info.value.details["metric"] == "tokens"
    ledger.close()
    (day,) = platform.usage("acme")
    assert (day.requests, day.prompt_tokens, day.completion_tokens) == (1, 60, 40)
    assert platform.quota_status("acme")["used"] == {
        "requests": 1,
        "tokens": 100,
        "embedding_inputs": 0,
    }


def test_flush_thread_writes_without_being_asked(platform: Platform) -> None:
    import time

    ledger = QuotaLedger(platform, flush_s=0.05).start()
    try:
        ledger.charge("acme", {"requests": 1})
        deadline = time.monotonic() + 30
        while platform.quota_status("acme")["used"]["requests"] != 1:
            assert time.monotonic() < deadline, "the flush thread never wrote"
            time.sleep(0.05)
    finally:
        ledger.close()
    assert platform.quota_status("acme")["used"]["requests"] == 1
