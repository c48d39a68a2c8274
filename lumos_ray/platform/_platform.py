"""The Platform: tenants, users, API keys, roles, plan quotas, metering, agent slots
and the audit log, over the store's database.

One ``Platform`` per process is the intended use (:func:`default_platform`), but
constructing one is cheap: databases are opened once per URL per process and shared.
Every method is synchronous and thread-safe (call it from a thread in async code:
``await asyncio.to_thread(platform.authenticate, key)``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from lumos_ray.config import LumosSettings
from lumos_ray.errors import (
    AuthenticationError,
    InputValidationError,
    NotFoundError,
)
from lumos_ray.platform import _audit, _slots, _storage, _usage
from lumos_ray.platform._keys import hash_secret, new_key, parse_key, secret_matches
from lumos_ray.platform._plans import Plan, Plans, load_plans
from lumos_ray.platform._roles import check_action, parse_role
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
from lumos_ray.store import (
    Database,
    api_keys,
    audit_heads,
    audit_log,
    open_database,
    tenants,
    users,
)

__all__ = ["Platform", "default_platform"]

log = logging.getLogger(__name__)

_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
_NAME_MAX = 200
#: How long a tenant's plan is remembered per process (a plan change shows within it).
PLAN_CACHE_S = 5.0
#: At most one ``login.failed`` audit entry per key id per this many seconds and
#: process: a flood of bad secrets must not become a flood of writes.
LOGIN_FAILURE_AUDIT_EVERY_S = 60.0
#: A storage refusal re-measures first when the measurement is older than this, so a
#: tenant that just deleted data is not refused on the old number.
STORAGE_RECHECK_S = 2.0


def _tenant_name(name: Any) -> str:
    if not isinstance(name, str) or not _TENANT_RE.match(name):
        raise InputValidationError(
            f"Invalid tenant name {str(name)[:80]!r}: 1-64 letters, digits and . _ : @ - "
            "(starting with a letter or digit).",
            fix="Pick a plain identifier such as 'acme' or 'team-42'.",
        )
    return name


def _opt_name(kind: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _NAME_MAX:
        raise InputValidationError(
            f"Invalid {kind} {str(value)[:60]!r}: a non-empty string of at most {_NAME_MAX} "
            "characters.",
            fix=f"Pass a shorter {kind}.",
        )
    return value


def _when(value: float | dt.datetime | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise InputValidationError(
                f"expires_at {value.isoformat()} has no time zone.",
                fix="Pass an aware datetime (e.g. datetime.now(UTC) + timedelta(days=90)) "
                "or a Unix timestamp.",
            )
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputValidationError(
            f"Invalid expires_at {value!r}: a Unix timestamp or an aware datetime.",
            fix="Pass e.g. time.time() + 90 * 86400.",
        )
    return float(value)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


class Platform:
    """Tenants, keys, roles, quotas, metering and audit over one store database.

    ``Platform(store_url=None, plans=None)``: ``store_url`` defaults to the settings'
    store (``LUMOS_STORE_URL``, else ``sqlite:///$LUMOS_HOME/runs.db``); ``plans`` to
    :func:`~lumos_ray.platform.load_plans` (``$LUMOS_PLANS_FILE`` or the built-in tiers).
    Opening fails with a StoreError (URL masked, with a fix) like the run store does.
    """

    def __init__(
        self,
        store_url: str | None = None,
        *,
        plans: Plans | None = None,
        shared: bool = True,
        home: str | None = None,
        adapters_root: str | None = None,
    ) -> None:
        settings = LumosSettings.from_env()
        url = store_url or settings.resolved_store_url()
        #: Where the tenants' RAG collections live (``<home>/rag/<tenant>``) and, with
        #: ``adapters_root`` unset, the adapter registry (``<home>/adapters``): the
        #: files part of :meth:`storage`.
        self.home: str = home or settings.home
        self.adapters_root: str | None = adapters_root
        # shared: the process's one connection pool per URL (the cheap default);
        # otherwise a pool of this Platform's own, released by close().
        self._db: Database = open_database(url) if shared else Database(url)
        self._owns_db = not shared
        self.plans: Plans = plans or load_plans()
        self._plan_cache: dict[str, tuple[float, str, bool]] = {}
        self._storage_cache: dict[str, _storage.StorageReport] = {}
        self._storage_locks: dict[str, threading.Lock] = {}
        self._refreshing: set[str] = set()
        self._failures: dict[str, float] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release this Platform's own connections (``shared=False``); a no-op for the
        shared pool, which lives as long as the process."""
        if self._owns_db:
            self._db.close()

    @property
    def url(self) -> str:
        """The store URL, password masked."""
        return self._db.url

    def __repr__(self) -> str:
        return f"Platform({self.url!r})"

    # -- plans and tenants --------------------------------------------------------
    def plan(self, name: str) -> Plan:
        """The plan called ``name``; InputValidationError naming the known plans."""
        found = self.plans.plans.get(name)
        if found is None:
            raise InputValidationError(
                f"Unknown plan {str(name)[:40]!r}.",
                fix=f"Use one of: {', '.join(self.plans.plans)} (edit the plans file named "
                "by LUMOS_PLANS_FILE to add plans).",
            )
        return found

    def create_tenant(
        self, name: str, plan: str | None = None, *, actor: str = "operator"
    ) -> Tenant:
        """Create tenant ``name`` on ``plan`` (default: the plans' default). The name is
        the id every row of the tenant is keyed by; it cannot change."""
        _tenant_name(name)
        plan = plan or self.plans.default_plan
        self.plan(plan)
        now = time.time()
        try:
            with self._db.write() as c:
                c.execute(
                    tenants.insert().values(
                        tenant_id=name, plan=plan, created_at=now, updated_at=now
                    )
                )
                _audit.append(self._db, c, name, actor, "tenant.created", name, {"plan": plan})
        except IntegrityError:
            raise InputValidationError(
                f"Tenant {name!r} exists already.",
                fix="Pick another name, or change its plan with `lumos tenants set-plan`.",
            ) from None
        return Tenant(name, plan, now, now)

    def get_tenant(self, name: str) -> Tenant:
        """The tenant; NotFoundError when there is none of that name."""
        with self._db.read() as c:
            row = c.execute(
                select(tenants).where(tenants.c.tenant_id == _tenant_name(name))
            ).first()
        if row is None:
            raise NotFoundError(
                f"No tenant {name!r}.",
                fix="List tenants with `lumos tenants list`; create one with "
                "`lumos tenants create NAME --plan free`.",
            )
        return Tenant(row.tenant_id, row.plan, float(row.created_at), float(row.updated_at))

    def list_tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        with self._db.read() as c:
            rows = c.execute(select(tenants).order_by(tenants.c.tenant_id).limit(100_000)).all()
        return [Tenant(r.tenant_id, r.plan, float(r.created_at), float(r.updated_at)) for r in rows]

    def set_plan(self, tenant: str, plan: str, *, actor: str = "operator") -> Tenant:
        """Move ``tenant`` to ``plan`` (audited as ``plan.changed``). Live agents and
        this month's counts stay; the new limits apply from the next check."""
        self.plan(plan)
        old = self.get_tenant(tenant)
        now = time.time()
        with self._db.write() as c:
            c.execute(
                update(tenants)
                .where(tenants.c.tenant_id == tenant)
                .values(plan=plan, updated_at=now)
            )
            _audit.append(
                self._db, c, tenant, actor, "plan.changed", tenant, {"from": old.plan, "to": plan}
            )
        with self._lock:
            self._plan_cache.pop(tenant, None)
        return Tenant(tenant, plan, old.created_at, now)

    def _plan_of(self, tenant: str) -> tuple[str, Plan]:
        """(name, plan) of ``tenant``; a tenant with no row (e.g. ``default`` in a
        single-user setup) is on the default plan."""
        now = time.monotonic()
        with self._lock:
            hit = self._plan_cache.get(tenant)
        if hit is not None and now - hit[0] < PLAN_CACHE_S:
            name = hit[1]
        else:
            with self._db.read() as c:
                found = c.execute(
                    select(tenants.c.plan).where(tenants.c.tenant_id == tenant)
                ).scalar()
            name = str(found) if found is not None else self.plans.default_plan
            with self._lock:
                self._plan_cache[tenant] = (now, name, found is not None)
        if name not in self.plans.plans:  # a plan removed from the config since
            raise InputValidationError(
                f"Tenant {tenant!r} is on plan {name!r}, which the plans config does not define.",
                fix=f"Add plan {name!r} to the plans file, or move the tenant with "
                "`lumos tenants set-plan`.",
            )
        return name, self.plans.plans[name]

    def _is_platform_tenant(self, tenant: str) -> bool:
        """Whether ``tenant`` has a row (read through the plan cache)."""
        self._plan_of(tenant)
        with self._lock:
            hit = self._plan_cache.get(tenant)
        return bool(hit and hit[2])

    # -- users ----------------------------------------------------------------------
    def create_user(
        self, tenant: str, name: str, role: Role | str, *, actor: str = "operator"
    ) -> User:
        """Add a user to ``tenant``; keys can then be made for them (``user=``)."""
        self.get_tenant(tenant)
        r = parse_role(role)
        _opt_name("user name", name)
        now = time.time()
        try:
            with self._db.write() as c:
                c.execute(
                    users.insert().values(tenant_id=tenant, name=name, role=r.value, created_at=now)
                )
                _audit.append(self._db, c, tenant, actor, "user.created", name, {"role": r.value})
        except IntegrityError:
            raise InputValidationError(
                f"User {name!r} exists already in tenant {tenant!r}.", fix="Pick another name."
            ) from None
        return User(tenant, name, r, now)

    def list_users(self, tenant: str) -> list[User]:
        with self._db.read() as c:
            rows = c.execute(
                select(users)
                .where(users.c.tenant_id == _tenant_name(tenant))
                .order_by(users.c.name)
            ).all()
        return [User(r.tenant_id, r.name, Role(r.role), float(r.created_at)) for r in rows]

    # -- keys -----------------------------------------------------------------------
    def create_key(
        self,
        tenant: str,
        role: Role | str,
        *,
        expires_at: float | dt.datetime | None = None,
        name: str | None = None,
        user: str | None = None,
        actor: str = "operator",
    ) -> CreatedKey:
        """Make a key for ``tenant`` with ``role``. The returned ``secret_shown_once``
        is the only copy of the key (the store keeps a hash): hand it over now."""
        self.get_tenant(tenant)
        r = parse_role(role)
        exp = _when(expires_at)
        now = time.time()
        if exp is not None and exp <= now:
            raise InputValidationError(
                f"expires_at {_iso(exp)} is in the past.",
                fix="Pass a time in the future (or none for a key that does not expire).",
            )
        _opt_name("key name", name)
        _opt_name("user", user)
        if user is not None and user not in {u.name for u in self.list_users(tenant)}:
            raise NotFoundError(
                f"No user {user!r} in tenant {tenant!r}.",
                fix="Create the user first (Platform.create_user), or leave user unset.",
            )
        key_id, secret, raw = new_key()
        with self._db.write() as c:
            c.execute(
                api_keys.insert().values(
                    tenant_id=tenant,
                    key_id=key_id,
                    secret_hash=hash_secret(key_id, secret),
                    role=r.value,
                    name=name,
                    user_name=user,
                    created_at=now,
                    expires_at=exp,
                    revoked_at=None,
                )
            )
            _audit.append(
                self._db,
                c,
                tenant,
                actor,
                "key.created",
                key_id,
                {"role": r.value, "name": name, "expires_at": exp},
            )
        return CreatedKey(key_id, raw, tenant, r, name, exp, now)

    def revoke_key(self, tenant: str, key_id: str, *, actor: str = "operator") -> KeyInfo:
        """Revoke ``tenant``'s key ``key_id`` (from the next request on). A key of another
        tenant is NotFound, exactly like a key that does not exist."""
        now = time.time()
        with self._db.write() as c:
            n = c.execute(
                update(api_keys)
                .where(
                    api_keys.c.tenant_id == _tenant_name(tenant),
                    api_keys.c.key_id == key_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            ).rowcount
            if n == 1:
                _audit.append(self._db, c, tenant, actor, "key.revoked", key_id, None)
        info = self._key_info(tenant, key_id)
        return info

    def _key_info(self, tenant: str, key_id: str) -> KeyInfo:
        with self._db.read() as c:
            row = c.execute(
                select(api_keys).where(api_keys.c.tenant_id == tenant, api_keys.c.key_id == key_id)
            ).first()
        if row is None:
            raise NotFoundError(
                f"No key {str(key_id)[:40]!r} in tenant {tenant!r}.",
                fix=f"List the tenant's keys with `lumos keys list {tenant}`.",
            )
        return _key(row)

    def list_keys(self, tenant: str) -> list[KeyInfo]:
        """``tenant``'s keys, newest first: ids, roles, names, times; never secrets."""
        with self._db.read() as c:
            rows = c.execute(
                select(api_keys)
                .where(api_keys.c.tenant_id == _tenant_name(tenant))
                .order_by(api_keys.c.created_at.desc())
                .limit(10_000)
            ).all()
        return [_key(r) for r in rows]

    # -- authentication and authorization ------------------------------------------
    def authenticate(self, raw_key: str | None) -> Principal:
        """The Principal a presented key proves, or AuthenticationError (HTTP 401) for a
        missing, malformed, unknown, wrong, expired or revoked key. ``raw_key`` is the
        key (``lumos_<id>_<secret>``); a leading ``Bearer `` is accepted. Messages never
        contain the secret."""
        if raw_key is None or not str(raw_key).strip():
            raise AuthenticationError(
                "Missing API key.",
                fix="Send `Authorization: Bearer lumos_...` with a key of your tenant.",
            )
        parsed = parse_key(str(raw_key)) if isinstance(raw_key, str) else None
        if parsed is None:
            raise AuthenticationError(
                "Malformed API key: expected lumos_<16 hex>_<secret>.",
                fix="Send the whole key exactly as `lumos keys create` printed it.",
            )
        key_id, secret = parsed
        with self._db.read() as c:
            row = c.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            raise AuthenticationError("Invalid API key.")
        if not secret_matches(key_id, secret, row.secret_hash):
            self._login_failed(row.tenant_id, key_id, "wrong secret")
            raise AuthenticationError("Invalid API key.")
        now = time.time()
        if row.revoked_at is not None:
            self._login_failed(row.tenant_id, key_id, "revoked")
            raise AuthenticationError(
                f"API key {key_id} was revoked at {_iso(float(row.revoked_at))}.",
                fix="Ask a tenant admin for a new key (`lumos keys create`).",
            )
        if row.expires_at is not None and float(row.expires_at) <= now:
            self._login_failed(row.tenant_id, key_id, "expired")
            raise AuthenticationError(
                f"API key {key_id} expired at {_iso(float(row.expires_at))}.",
                fix="Ask a tenant admin for a new key (`lumos keys create`).",
            )
        return Principal(tenant=row.tenant_id, role=Role(row.role), key_id=key_id)

    def _login_failed(self, tenant: str, key_id: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._failures.get(key_id)
            if last is not None and now - last < LOGIN_FAILURE_AUDIT_EVERY_S:
                return
            self._failures[key_id] = now
            if len(self._failures) > 10_000:  # bounded memory under a flood
                self._failures.clear()
        self.audit(tenant, f"key:{key_id}", "login.failed", key_id, {"reason": reason})

    def authorize(self, principal: Principal, action: str, *, tenant: str | None = None) -> None:
        """Raise PermissionDeniedError (HTTP 403) unless ``principal``'s role allows
        ``action`` (see ``ACTIONS``: viewer reads; developer also runs, resumes,
        cancels, submits, chats, embeds; admin also manages keys, tenants, plans and
        the audit log). With ``tenant``, also that it is the principal's own tenant."""
        check_action(principal, action, tenant)

    # -- quotas and metering --------------------------------------------------------
    def charge(
        self,
        principal: Principal | str,
        *,
        requests: int = 1,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        embedding_inputs: int = 0,
    ) -> None:
        """Count these amounts against the tenant's monthly plan quota and meter them;
        raise QuotaExceededError (HTTP 429; ``err.details["retry_after_s"]``: seconds
        until the quota resets) and count nothing when they would exceed it. Call
        before the work; meter what is only known afterwards with :meth:`record_usage`
        (what was charged here must not be recorded again)."""
        tenant = principal.tenant if isinstance(principal, Principal) else _tenant_name(principal)
        counts = _usage.check_amounts(
            requests=requests,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            embedding_inputs=embedding_inputs,
        )
        plan_name, plan = self._plan_of(tenant)
        _usage.charge(self._db, tenant, plan_name, plan, counts)

    def record_usage(
        self,
        principal: Principal | str,
        *,
        requests: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        embedding_inputs: int = 0,
        agent_seconds: float = 0.0,
        storage_bytes: int | None = None,
    ) -> None:
        """Meter usage that already happened (never refused): tokens of a finished
        response, agent-seconds, the tenant's storage in bytes (a gauge: the latest
        value of the day). Counts also towards this month's quota."""
        tenant = principal.tenant if isinstance(principal, Principal) else _tenant_name(principal)
        counts = _usage.check_amounts(
            requests=requests,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            embedding_inputs=embedding_inputs,
        )
        _usage.check_amounts(agent_seconds=agent_seconds)
        if storage_bytes is not None:
            _usage.check_amounts(storage_bytes=storage_bytes)
        _usage.record(self._db, tenant, counts, float(agent_seconds), storage_bytes)

    def usage(
        self,
        tenant: str | None = None,
        *,
        since: str | None = None,
        until: str | None = None,
    ) -> list[UsageDay]:
        """Metered usage per tenant and UTC day (all tenants when ``tenant`` is None;
        ``since``/``until`` are inclusive ``YYYY-MM-DD``)."""
        for label, day in (("since", since), ("until", until)):
            if day is not None:
                try:
                    dt.date.fromisoformat(day)
                except (TypeError, ValueError):
                    raise InputValidationError(
                        f"Invalid {label} {str(day)[:20]!r}: expected YYYY-MM-DD.",
                        fix="Pass a date like 2026-01-31.",
                    ) from None
        names = None if tenant is None else [_tenant_name(tenant)]
        return _usage.usage_days(self._db, names, since, until)

    def quota_status(self, tenant: str) -> dict[str, Any]:
        """This month's quota use against the plan's limits (None: unlimited)."""
        plan_name, plan = self._plan_of(_tenant_name(tenant))
        period = _usage.month_of(time.time())
        used = _usage.month_usage(self._db, tenant, period)
        return {
            "tenant": tenant,
            "plan": plan_name,
            "period": period,
            "used": used,
            "limits": {m: getattr(plan, f) for m, f in _usage.QUOTA_METRICS.items()},
            "concurrent_agents": {
                "live": len(_slots.live_slots(self._db, tenant)),
                "limit": plan.concurrent_agents,
            },
            "storage_bytes_limit": plan.storage_bytes,
            "storage": {
                "used": (report := self.storage(tenant)).total,
                "limit": plan.storage_bytes,
                "measured_at": report.measured_at,
                "truncated": report.truncated,
                "detail": report.to_dict(),
            },
        }

    def tenant_usage(
        self,
        principal: Principal,
        tenant: str | None = None,
        *,
        since: str | None = None,
        until: str | None = None,
    ) -> dict[str, Any]:
        """What a caller may see of usage: its own tenant's days and quota status
        (``{"tenant", "days", "quota"}``). Naming another tenant is NotFoundError with
        the same message as a tenant that does not exist (HTTP 404: no existence leak),
        whatever the caller's role."""
        tenant = principal.tenant if tenant is None else tenant
        if tenant != principal.tenant:
            raise NotFoundError(
                f"No tenant {str(tenant)[:64]!r}.", fix="Ask for your own tenant's usage."
            )
        check_action(principal, "read", tenant)
        days = self.usage(tenant, since=since, until=until)
        return {
            "tenant": tenant,
            "days": [d.to_dict() for d in days],
            "quota": self.quota_status(tenant),
        }

    # -- storage --------------------------------------------------------------------
    def storage(self, tenant: str, *, fresh: bool = False) -> _storage.StorageReport:
        """``tenant``'s stored bytes (store rows, RAG collection folders, its adapters;
        see ``lumos_ray.platform._storage``). A measurement is reused for
        ``STORAGE_SCAN_S`` seconds per process unless ``fresh`` (then the result is of a
        scan that started after this call); each new one is also metered as the day's
        ``storage_bytes`` gauge. One scan per tenant at a time per Platform: callers
        that arrive during a scan wait for it and share its result."""
        _tenant_name(tenant)
        now = time.time()
        with self._lock:
            hit = self._storage_cache.get(tenant)
        if not fresh and hit is not None and now - hit.measured_at < _storage.STORAGE_SCAN_S:
            return hit
        return self._measure(tenant, now if fresh else now - _storage.STORAGE_SCAN_S)

    def _measure(self, tenant: str, newer_than: float) -> _storage.StorageReport:
        """A measurement that started at or after ``newer_than``: the cached one if it
        is that recent (another caller just scanned), else a new scan."""
        with self._lock:
            lock = self._storage_locks.setdefault(tenant, threading.Lock())
        with lock:
            with self._lock:
                hit = self._storage_cache.get(tenant)
            if hit is not None and hit.measured_at >= newer_than:
                return hit
            report = _storage.measure(self._db, tenant, self.home, self.adapters_root)
            _usage.record(self._db, tenant, dict.fromkeys(_usage.COUNTERS, 0), 0.0, report.total)
            with self._lock:
                if len(self._storage_cache) > 10_000:
                    self._storage_cache.clear()
                    self._storage_locks.clear()
                self._storage_cache[tenant] = report
            return report

    def _refresh_storage(self, tenant: str) -> None:
        """Measure ``tenant`` again in a background thread (one at a time per tenant):
        a check on a request path uses the last measurement meanwhile, so it never
        waits for a scan except the tenant's first."""
        with self._lock:
            if tenant in self._refreshing:
                return
            self._refreshing.add(tenant)

        def run() -> None:
            try:
                self._measure(tenant, time.time())
            except Exception:  # a failed scan keeps the last measurement; the next retries
                log.warning("Measuring the storage of tenant %r failed", tenant, exc_info=True)
            finally:
                with self._lock:
                    self._refreshing.discard(tenant)

        threading.Thread(target=run, name=f"lumos-storage-{tenant}", daemon=True).start()

    def check_storage(self, tenant: str, incoming_bytes: int = 0) -> None:
        """Refuse a new write of ``tenant`` with QuotaExceededError (HTTP 429, metric
        ``storage_bytes``, ``used``, ``limit``, and a fix) when its stored bytes are at
        its plan's limit, or would pass it by ``incoming_bytes`` (when the caller knows
        the size). Tenants with no platform row (``default`` on a single-user machine)
        and plans without a storage limit are not limited.

        Cheap on a request path: it decides on the last measurement and, once that is
        ``STORAGE_SCAN_S`` old, starts a new one in the background (only the tenant's
        first check waits for a scan). A refusal is decided on a measurement at most
        ``STORAGE_RECHECK_S`` old, so data deleted just before is seen."""
        _usage.check_amounts(storage_bytes=incoming_bytes)
        if not self._is_platform_tenant(tenant):
            return
        plan_name, plan = self._plan_of(tenant)
        limit = plan.storage_bytes
        if limit is None:
            return
        with self._lock:
            report = self._storage_cache.get(tenant)
        if report is None:
            report = self._measure(tenant, 0.0)
        elif time.time() - report.measured_at >= _storage.STORAGE_SCAN_S:
            self._refresh_storage(tenant)

        def over(r: _storage.StorageReport) -> bool:
            return r.total >= limit or (incoming_bytes > 0 and r.total + incoming_bytes > limit)

        if over(report) and time.time() - report.measured_at > STORAGE_RECHECK_S:
            report = self._measure(tenant, time.time() - STORAGE_RECHECK_S)
        if over(report):
            raise _storage.storage_error(tenant, plan_name, report, limit, incoming_bytes)

    # -- agent concurrency ----------------------------------------------------------
    def acquire_agent_slot(
        self,
        tenant: str,
        *,
        holder: str | None = None,
        ttl_s: float = _slots.DEFAULT_TTL_S,
    ) -> AgentSlot:
        """Take one of ``tenant``'s concurrent-agent slots for ``ttl_s`` seconds (renew
        it with :meth:`renew_agent_slot` while the agent runs; release it when done).
        AgentConcurrencyError (a QuotaExceededError) when the plan's limit is live."""
        plan_name, plan = self._plan_of(_tenant_name(tenant))
        return _slots.acquire(self._db, tenant, plan_name, plan.concurrent_agents, holder, ttl_s)

    def renew_agent_slot(
        self, tenant: str, slot: AgentSlot | str, *, ttl_s: float = _slots.DEFAULT_TTL_S
    ) -> AgentSlot:
        """Extend a held slot's lease; NotFoundError when it has already expired."""
        slot_id = slot.slot_id if isinstance(slot, AgentSlot) else slot
        return _slots.renew(self._db, _tenant_name(tenant), slot_id, ttl_s)

    def release_agent_slot(self, tenant: str, slot: AgentSlot | str) -> bool:
        """Give the slot back (True), or False when it was not held any more."""
        slot_id = slot.slot_id if isinstance(slot, AgentSlot) else slot
        return _slots.release(self._db, _tenant_name(tenant), slot_id)

    def agent_slots(self, tenant: str) -> list[AgentSlot]:
        """``tenant``'s live slots."""
        return _slots.live_slots(self._db, _tenant_name(tenant))

    # -- audit ----------------------------------------------------------------------
    def audit(
        self,
        tenant: str,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Append an entry to ``tenant``'s hash-chained audit log (events such as
        ``run.started``, ``job.submitted``, ``adapter.registered``; see
        ``AUDIT_EVENTS``). ``actor``: who (``Principal.actor``, ``operator``, ...);
        ``target``: what (a run id, key id, adapter name)."""
        with self._db.write() as c:
            return _audit.append(self._db, c, _tenant_name(tenant), actor, action, target, detail)

    def audit_tail(self, tenant: str, limit: int = 20) -> list[AuditEntry]:
        """The newest ``limit`` entries of ``tenant``, oldest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InputValidationError(
                f"Invalid limit {limit!r}: an integer from 1 to 10000.", fix="Pass a smaller limit."
            )
        return _audit.tail(self._db, _tenant_name(tenant), limit)

    def verify_audit(self, tenant: str | None = None) -> list[AuditReport]:
        """Verify the chain of ``tenant`` (every tenant with an audit log when None);
        each report names the first edited, inserted or deleted entry, if any."""
        if tenant is not None:
            return [_audit.verify(self._db, _tenant_name(tenant))]
        with self._db.read() as c:
            names = {r[0] for r in c.execute(select(audit_heads.c.tenant_id))}
            names |= {r[0] for r in c.execute(select(audit_log.c.tenant_id).distinct())}
        return [_audit.verify(self._db, t) for t in sorted(names)]


def _key(row: Any) -> KeyInfo:
    return KeyInfo(
        tenant=row.tenant_id,
        key_id=row.key_id,
        role=Role(row.role),
        name=row.name,
        user=row.user_name,
        created_at=float(row.created_at),
        expires_at=None if row.expires_at is None else float(row.expires_at),
        revoked_at=None if row.revoked_at is None else float(row.revoked_at),
    )


_default: dict[tuple[str, str], Platform] = {}
_default_lock = threading.Lock()


def default_platform() -> Platform:
    """The process's Platform for the settings' store and plans file (env)."""
    import os

    from lumos_ray.platform._plans import PLANS_ENV

    url = LumosSettings.from_env().resolved_store_url()
    key = (url, os.environ.get(PLANS_ENV, ""))
    with _default_lock:
        found = _default.get(key)
        if found is None:
            found = _default[key] = Platform(url)
        return found
