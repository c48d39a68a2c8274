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


def test_the_flush_thread_re_reads_other_writers_totals_every_refresh_interval(
    platform: Platform,
) -> None:
    platform.create_tenant("beta", "tiny")
    ledger = QuotaLedger(platform, flush_s=0.5, refresh_s=5.0)  # ticks driven by hand
    assert ledger.quota_used("acme")["requests"] == 0  # loaded on first use
    for _ in range(3):
        platform.charge("acme")  # another writer, straight to the store
    assert ledger.tick(100.0) == 0  # nothing to write; the first tick re-reads
    assert ledger.quota_used("acme")["requests"] == 3
    platform.charge("acme")
    ledger.tick(100.5)
    ledger.tick(104.9)  # idle ticks inside the interval: no re-read
    assert ledger.quota_used("acme")["requests"] == 3
    ledger.tick(105.0)
    assert ledger.quota_used("acme")["requests"] == 4
    # A tick that writes one tenant's charges still re-reads the others when due.
    platform.charge("acme")
    ledger.charge("beta", {"requests": 1})
    assert ledger.tick(106.0) == 2  # beta's month and day rows; acme not re-read yet
    assert ledger.quota_used("acme")["requests"] == 4
    ledger.charge("beta", {"requests": 1})
    ledger.tick(110.0)
    assert ledger.quota_used("acme")["requests"] == 5
    assert ledger.quota_used("beta")["requests"] == 2
    assert platform.quota_status("beta")["used"]["requests"] == 2
    with pytest.raises(ValueError, match="refresh_s"):
        QuotaLedger(platform, refresh_s=0)
