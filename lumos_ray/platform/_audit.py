"""The audit log: append-only, hash-chained per tenant, and its verification.

Entry ``seq`` of a tenant stores ``prev_hash`` (the hash of entry ``seq - 1``, or 64
zeros for the first) and ``hash = sha256(prev_hash + canonical JSON of its content)``.
The tenant's newest (seq, hash) is also kept in ``audit_heads``, written in the same
transaction, so deleting the newest entries (which leaves a shorter chain that is
still consistent) shows too.

What this detects: any single edited, inserted or deleted row, found by walking the
chain. What it cannot detect on its own: someone with write access who rewrites the
whole chain from the edit onwards *and* the head. Against that, keep the head hash
(``lumos audit verify`` prints it) somewhere the database's writers cannot change.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, select

from lumos_ray.errors import InputValidationError
from lumos_ray.platform._types import AuditEntry, AuditReport
from lumos_ray.store import Database, audit_heads, audit_log

__all__ = ["AUDIT_EVENTS", "GENESIS", "append", "content_hash", "tail", "verify"]

GENESIS = "0" * 64
#: The events the platform and its callers record (any ``a.b`` name is accepted).
AUDIT_EVENTS = frozenset(
    {
        "tenant.created",
        "plan.changed",
        "user.created",
        "key.created",
        "key.revoked",
        "login.failed",
        "run.started",
        "run.resumed",
        "run.cancelled",
        "job.submitted",
        "adapter.registered",
        "run.deleted",
        "thread.deleted",
    }
)
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_PAGE = 2000
_LIMITS = {"actor": 200, "action": 64, "target": 500}


def content_hash(
    prev_hash: str,
    tenant: str,
    seq: int,
    ts: float,
    actor: str,
    action: str,
    target: str,
    detail: Any,
) -> str:
    """The hash an entry with this content, chained after ``prev_hash``, must have."""
    body = json.dumps(
        [tenant, seq, ts, actor, action, target, detail],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def _check(field: str, value: Any) -> str:
    limit = _LIMITS[field]
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InputValidationError(
            f"Invalid audit {field} {str(value)[:60]!r}: a non-empty string of at most "
            f"{limit} characters.",
            fix=f"Pass a shorter {field}.",
        )
    return value


def append(
    db: Database,
    c: Connection,
    tenant: str,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None,
) -> AuditEntry:
    """Append one entry inside the caller's write transaction ``c`` (so the entry and
    the change it records commit together, or neither does)."""
    _check("actor", actor)
    _check("target", target)
    if not isinstance(action, str) or len(action) > 64 or not _ACTION_RE.match(action):
        raise InputValidationError(
            f"Invalid audit action {str(action)[:60]!r}.",
            fix="Use a dotted lowercase name such as 'run.started' "
            f"(known: {', '.join(sorted(AUDIT_EVENTS))}).",
        )
    if detail is not None and not isinstance(detail, dict):
        raise InputValidationError(
            f"Audit detail must be a JSON object or None, not {type(detail).__name__}.",
            fix="Pass a dict.",
        )
    db.lock(c, [f"audit\x1f{tenant}"])
    head = c.execute(
        select(audit_heads.c.seq, audit_heads.c.hash).where(audit_heads.c.tenant_id == tenant)
    ).first()
    seq = (head.seq if head else 0) + 1
    prev = head.hash if head else GENESIS
    ts = time.time()
    digest = content_hash(prev, tenant, seq, ts, actor, action, target, detail)
    c.execute(
        audit_log.insert().values(
            tenant_id=tenant,
            seq=seq,
            ts=ts,
            actor=actor,
            action=action,
            target=target,
            detail=detail,
            prev_hash=prev,
            hash=digest,
        )
    )
    up = db.upsert()(audit_heads).values(tenant_id=tenant, seq=seq, hash=digest)
    c.execute(
        up.on_conflict_do_update(
            index_elements=["tenant_id"], set_={"seq": up.excluded.seq, "hash": up.excluded.hash}
        )
    )
    return AuditEntry(tenant, seq, ts, actor, action, target, detail, prev, digest)


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        tenant=row.tenant_id,
        seq=int(row.seq),
        ts=float(row.ts),
        actor=row.actor,
        action=row.action,
        target=row.target,
        detail=row.detail,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _rows(db: Database, tenant: str) -> Iterator[AuditEntry]:
    """Every entry of ``tenant`` in seq order, a page at a time."""
    after: int | None = None
    while True:
        q = select(audit_log).where(audit_log.c.tenant_id == tenant)
        if after is not None:  # (a raw insert may have used any integer, even negative)
            q = q.where(audit_log.c.seq > after)
        with db.read() as c:
            page = c.execute(q.order_by(audit_log.c.seq).limit(_PAGE)).all()
        for row in page:
            yield _entry(row)
        if len(page) < _PAGE:
            return
        after = int(page[-1].seq)


def verify(db: Database, tenant: str) -> AuditReport:
    """Walk ``tenant``'s chain; the report names the first bad entry, if any."""
    with db.read() as c:
        head = c.execute(
            select(audit_heads.c.seq, audit_heads.c.hash).where(audit_heads.c.tenant_id == tenant)
        ).first()
    head_seq = int(head.seq) if head else 0
    head_hash = head.hash if head else None

    def bad(n: int, seq: int, problem: str) -> AuditReport:
        return AuditReport(tenant, False, n, seq, problem, head_seq, head_hash)

    expected, prev, n = 1, GENESIS, 0
    for e in _rows(db, tenant):
        n += 1
        if e.seq != expected:
            if e.seq < expected:  # only a non-positive seq can sort before the chain start
                return bad(n, e.seq, f"entry {e.seq} was inserted (sequence numbers start at 1)")
            return bad(
                n,
                expected,
                f"entry {expected} is missing (deleted): the next entry is {e.seq}",
            )
        want = content_hash(e.prev_hash, tenant, e.seq, e.ts, e.actor, e.action, e.target, e.detail)
        if want != e.hash:
            return bad(
                n,
                e.seq,
                f"entry {e.seq} was edited or inserted: its content does not match its hash",
            )
        if e.prev_hash != prev:
            return bad(
                n,
                e.seq,
                f"entry {e.seq} does not chain to entry {e.seq - 1} (an entry was inserted "
                "or deleted here, or one was rewritten)",
            )
        prev, expected = e.hash, expected + 1
    last = expected - 1
    if head is None and last > 0:
        return bad(n, 1, "the chain head record is missing (deleted)")
    if last < head_seq:
        return bad(
            n,
            last + 1,
            f"entry {last + 1} is missing (deleted): the head records {head_seq} entries",
        )
    if last > head_seq:
        return bad(
            n,
            head_seq + 1,
            f"entry {head_seq + 1} was inserted after the recorded head (entry {head_seq})",
        )
    if head is not None and head_hash != prev:
        return bad(n, last, f"entry {last} does not match the recorded head hash")
    return AuditReport(tenant, True, n, None, None, head_seq, head_hash)


def tail(db: Database, tenant: str, limit: int) -> list[AuditEntry]:
    """The newest ``limit`` entries of ``tenant``, oldest first."""
    with db.read() as c:
        rows = c.execute(
            select(audit_log)
            .where(audit_log.c.tenant_id == tenant)
            .order_by(audit_log.c.seq.desc())
            .limit(limit)
        ).all()
    return [_entry(r) for r in reversed(rows)]
