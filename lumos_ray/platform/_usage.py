"""Metering and monthly plan quotas, as atomic SQL.

Counts from many gateway replicas and runner processes land in the same rows, so
every change is one statement the database applies atomically:

* metering (``usage_daily``): ``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``;
* quota (``quota_usage``): ``UPDATE ... SET used = used + :n WHERE ... AND used + :n <=
  :limit``. One row updated: charged. None: over the limit, and the transaction (with
  the metering it would have written) rolls back. PostgreSQL re-checks the WHERE
  against the row a concurrent writer just committed; SQLite runs writers one at a time.

Never read-modify-write in Python: two processes would both read 9,999 and both write
10,000.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from sqlalchemy import Connection, select, update

from lumos_ray.errors import InputValidationError, QuotaExceededError
from lumos_ray.platform._plans import Plan
from lumos_ray.platform._types import UsageDay
from lumos_ray.store import Database, quota_usage, usage_daily

__all__ = [
    "COUNTERS",
    "QUOTA_METRICS",
    "charge",
    "check_amounts",
    "day_and_month",
    "day_of",
    "flush_batch",
    "month_of",
    "month_totals",
    "month_usage",
    "quota_amounts",
    "quota_error",
    "record",
    "seconds_to_next_month",
    "usage_days",
]

#: Integer counters metered per day (agent_seconds is a float, storage a gauge).
COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "embedding_inputs")
#: Monthly quota metric -> the plan field that limits it.
QUOTA_METRICS = {
    "requests": "api_calls_per_month",
    "tokens": "tokens_per_month",
    "embedding_inputs": "embedding_inputs_per_month",
}


def day_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def month_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m")


_DAY_CACHE: tuple[int, str, str] = (-1, "", "")


def day_and_month(ts: float) -> tuple[str, str]:
    """(YYYY-MM-DD, YYYY-MM) of ``ts`` in UTC, remembered for the current day: the
    gateway asks for every request, and formatting dates is a measurable share of
    its per-request work. Unix days are exactly 86,400 s, so the day number is exact."""
    global _DAY_CACHE
    n = int(ts // 86400)
    cached = _DAY_CACHE
    if cached[0] != n:
        cached = _DAY_CACHE = (n, day_of(ts), month_of(ts))
    return cached[1], cached[2]


def seconds_to_next_month(ts: float) -> int:
    """Whole seconds (at least 1) until the next UTC month starts: when a monthly
    quota frees up."""
    now = dt.datetime.fromtimestamp(ts, dt.UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    return max(1, math.ceil((start - now).total_seconds()))


def check_amounts(**amounts: Any) -> dict[str, Any]:
    """Amounts must be non-negative numbers (ints for counters)."""
    for name, value in amounts.items():
        ok_type = (int, float) if name == "agent_seconds" else (int,)
        if (
            isinstance(value, bool)
            or not isinstance(value, ok_type)
            or value < 0
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            kind = "a non-negative number" if name == "agent_seconds" else "a non-negative integer"
            raise InputValidationError(
                f"Invalid usage amount {name}={value!r}: must be {kind}.",
                fix=f"Pass {name} as {kind}.",
            )
    return amounts


def _meter(
    db: Database,
    c: Connection,
    tenant: str,
    now: float,
    counts: dict[str, int],
    agent_seconds: float,
    storage_bytes: int | None,
    day: str | None = None,
) -> None:
    values: dict[str, Any] = {
        "tenant_id": tenant,
        "day": day or day_of(now),
        **{k: int(counts.get(k, 0)) for k in COUNTERS},
        "agent_seconds": float(agent_seconds),
        "storage_bytes": storage_bytes,
        "updated_at": now,
    }
    stmt = db.upsert()(usage_daily).values(**values)
    set_: dict[str, Any] = {
        k: usage_daily.c[k] + stmt.excluded[k] for k in (*COUNTERS, "agent_seconds")
    }
    set_["updated_at"] = stmt.excluded.updated_at
    if storage_bytes is not None:  # a gauge: the latest report wins
        set_["storage_bytes"] = stmt.excluded.storage_bytes
    c.execute(stmt.on_conflict_do_update(index_elements=["tenant_id", "day"], set_=set_))


def quota_amounts(counts: dict[str, int]) -> dict[str, int]:
    return {
        "requests": counts.get("requests", 0),
        "tokens": counts.get("prompt_tokens", 0) + counts.get("completion_tokens", 0),
        "embedding_inputs": counts.get("embedding_inputs", 0),
    }


def _ensure_rows(db: Database, c: Connection, tenant: str, period: str) -> None:
    stmt = db.upsert()(quota_usage).values(
        [{"tenant_id": tenant, "period": period, "metric": m, "used": 0} for m in QUOTA_METRICS]
    )
    c.execute(stmt.on_conflict_do_nothing())


def _where(tenant: str, period: str, metric: str) -> Any:
    return (
        (quota_usage.c.tenant_id == tenant)
        & (quota_usage.c.period == period)
        & (quota_usage.c.metric == metric)
    )


def quota_error(
    tenant: str, plan_name: str, metric: str, limit: int, now: float
) -> QuotaExceededError:
    """The 429 for a used-up monthly quota (``retry_after_s``: until next month)."""
    return QuotaExceededError(
        f"Tenant {tenant!r} has used its {plan_name} plan's monthly {metric} "
        f"quota ({limit:,}); it resets at the start of next month (UTC).",
        fix="Wait until the quota resets, or move the tenant to a higher "
        "plan (`lumos tenants set-plan TENANT PLAN`).",
        retry_after_s=seconds_to_next_month(now),
        metric=metric,
        limit=limit,
        plan=plan_name,
    )


def charge(
    db: Database,
    tenant: str,
    plan_name: str,
    plan: Plan,
    counts: dict[str, int],
) -> None:
    """Count ``counts`` against the month's quota and meter them, or raise
    QuotaExceededError (with ``retry_after_s``) and count nothing."""
    now = time.time()
    period = month_of(now)
    amounts = quota_amounts(counts)
    with db.write() as c:
        _ensure_rows(db, c, tenant, period)
        for metric in sorted(QUOTA_METRICS):  # one order everywhere: no deadlocks
            limit = getattr(plan, QUOTA_METRICS[metric])
            n = amounts[metric]
            stmt = update(quota_usage).where(_where(tenant, period, metric))
            if limit is not None:
                # n == 0 still refuses a metric already at its limit (tokens used up).
                cond = (quota_usage.c.used + n <= limit) if n else (quota_usage.c.used < limit)
                hit = c.execute(stmt.where(cond).values(used=quota_usage.c.used + n)).rowcount
                if hit != 1:
                    raise quota_error(tenant, plan_name, metric, limit, now)
            elif n:
                c.execute(stmt.values(used=quota_usage.c.used + n))
        _meter(db, c, tenant, now, counts, 0.0, None)


def record(
    db: Database,
    tenant: str,
    counts: dict[str, int],
    agent_seconds: float,
    storage_bytes: int | None,
) -> None:
    """Meter usage that already happened (never refused); it also counts towards the
    month's quota, so a later :func:`charge` sees it."""
    now = time.time()
    period = month_of(now)
    amounts = quota_amounts(counts)
    with db.write() as c:
        if any(amounts.values()):
            _ensure_rows(db, c, tenant, period)
            for metric in sorted(QUOTA_METRICS):
                if amounts[metric]:
                    c.execute(
                        update(quota_usage)
                        .where(_where(tenant, period, metric))
                        .values(used=quota_usage.c.used + amounts[metric])
                    )
        _meter(db, c, tenant, now, counts, agent_seconds, storage_bytes)


def flush_batch(
    db: Database,
    quota: dict[tuple[str, str], dict[str, int]],
    meter: dict[tuple[str, str], Any],
) -> dict[tuple[str, str], dict[str, int]]:
    """Write increments gathered in memory (by :class:`~lumos_ray.platform.QuotaLedger`)
    in ONE transaction: ``quota`` (tenant, YYYY-MM) -> metric -> n, added without a
    limit check (the ledger already decided); ``meter`` (tenant, YYYY-MM-DD) ->
    (counters, agent_seconds, storage gauge). Returns the stored monthly totals of
    every (tenant, period) written, read inside the same transaction, so the ledger
    also sees what other writers (a runner's direct ``charge``) added meanwhile."""
    now = time.time()
    totals: dict[tuple[str, str], dict[str, int]] = {}
    with db.write() as c:
        for (tenant, period), amounts in sorted(quota.items()):
            _ensure_rows(db, c, tenant, period)
            for metric in sorted(QUOTA_METRICS):
                if amounts.get(metric):
                    c.execute(
                        update(quota_usage)
                        .where(_where(tenant, period, metric))
                        .values(used=quota_usage.c.used + amounts[metric])
                    )
            out = dict.fromkeys(QUOTA_METRICS, 0)
            rows = c.execute(
                select(quota_usage.c.metric, quota_usage.c.used).where(
                    quota_usage.c.tenant_id == tenant, quota_usage.c.period == period
                )
            ).tuples()
            for metric, used in rows:
                out[str(metric)] = int(used)
            totals[(tenant, period)] = out
        for (tenant, day), (counts, agent_s, storage) in sorted(meter.items()):
            _meter(db, c, tenant, now, counts, agent_s, storage, day=day)
    return totals


def month_usage(db: Database, tenant: str, period: str) -> dict[str, int]:
    """metric -> what counts against the quota in ``period`` (YYYY-MM)."""
    out = dict.fromkeys(QUOTA_METRICS, 0)
    with db.read() as c:
        rows = c.execute(
            select(quota_usage.c.metric, quota_usage.c.used).where(
                quota_usage.c.tenant_id == tenant, quota_usage.c.period == period
            )
        ).tuples()
        for metric, used in rows:
            out[str(metric)] = int(used)
    return out


def month_totals(db: Database, period: str, tenants: list[str]) -> dict[str, dict[str, int]]:
    """tenant -> metric -> stored use in ``period``, for many tenants in one query."""
    out = {t: dict.fromkeys(QUOTA_METRICS, 0) for t in tenants}
    with db.read() as c:
        for i in range(0, len(tenants), 500):
            rows = c.execute(
                select(quota_usage.c.tenant_id, quota_usage.c.metric, quota_usage.c.used).where(
                    quota_usage.c.period == period,
                    quota_usage.c.tenant_id.in_(tenants[i : i + 500]),
                )
            ).tuples()
            for tenant, metric, used in rows:
                out[str(tenant)][str(metric)] = int(used)
    return out


def usage_days(
    db: Database, tenants: list[str] | None, since: str | None, until: str | None
) -> list[UsageDay]:
    """Metered days (``since``/``until``: inclusive YYYY-MM-DD), by tenant then day."""
    q = select(usage_daily)
    if tenants is not None:
        q = q.where(usage_daily.c.tenant_id.in_(tenants))
    if since:
        q = q.where(usage_daily.c.day >= since)
    if until:
        q = q.where(usage_daily.c.day <= until)
    q = q.order_by(usage_daily.c.tenant_id, usage_daily.c.day).limit(100_000)
    with db.read() as c:
        return [
            UsageDay(
                tenant=r.tenant_id,
                day=r.day,
                requests=int(r.requests),
                prompt_tokens=int(r.prompt_tokens),
                completion_tokens=int(r.completion_tokens),
                embedding_inputs=int(r.embedding_inputs),
                agent_seconds=float(r.agent_seconds),
                storage_bytes=None if r.storage_bytes is None else int(r.storage_bytes),
            )
            for r in c.execute(q)
        ]
