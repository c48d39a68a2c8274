"""A tenant's stored bytes, measured by a bounded periodic scan, and the plan's limit.

What counts (everything the tenant put there, nothing the platform keeps about it):

* the store: its runs, checkpoints, events, agent threads (messages and working
  memory), registered definitions and schedules (``lumos_ray.store.tenant_bytes``:
  one aggregate query per table over the tenant's key range);
* its RAG collections on local disk: ``<LUMOS_HOME>/rag/<tenant>/`` (the default
  snapshot roots and the registry) plus the root of every registered collection that
  lives in another local folder; collections in an object store (``s3://...``) are
  not counted (listing a bucket is not cheap: the store's own metering bills them);
* its adapters: entries of its namespace in the adapter registry
  (``<adapters>/_tenants/<tenant>/``), and old-layout entries whose ``metadata.json``
  names the tenant (shared adapters, published with no tenant, count for no one).

Why a scan and not a counter kept on write: the store is written on the hot path of
every run step and agent turn, by many processes; a counter would add a row update
to each of those transactions and serialise a tenant's writers on that row, and it
would drift whenever a writer forgets it (files are written by RAG shard actors and
training jobs in other processes; deletes shrink data). A scan is exact as of its
time. Its cost is bounded: the database part is indexed aggregates; the files part
stops after :data:`MAX_SCAN_ENTRIES` directory entries (the result then says
``truncated``: the real use is at least that). ``Platform.check_storage`` decides on
the last measurement and, once it is :data:`STORAGE_SCAN_S` old, starts the next one
in the background (only a tenant's first check in a process waits for a scan), so a
tenant can overshoot its limit by about what it writes in one interval.

The file layout is the RAG and adapter packages' convention, read here by path (the
platform sits below them and must not import them).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumos_ray.errors import QuotaExceededError
from lumos_ray.store import Database, tenant_bytes

__all__ = [
    "MAX_SCAN_ENTRIES",
    "STORAGE_SCAN_S",
    "StorageReport",
    "measure",
    "storage_error",
]

#: How long a process trusts a tenant's last measurement before scanning again.
STORAGE_SCAN_S = 60.0
#: Most directory entries one measurement walks (files and folders together).
MAX_SCAN_ENTRIES = 200_000
_ADAPTER_META = "metadata.json"


@dataclass(frozen=True)
class StorageReport:
    """One measurement of a tenant's stored bytes."""

    tenant: str
    total: int
    store: dict[str, int]
    rag: int
    adapters: int
    #: When the scan started (Unix time): it includes everything written before.
    measured_at: float
    truncated: bool = False
    #: Object-store collection roots that were not counted.
    skipped: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "total": self.total,
            "store": dict(self.store),
            "rag": self.rag,
            "adapters": self.adapters,
            "measured_at": self.measured_at,
            "truncated": self.truncated,
            "skipped": list(self.skipped),
        }


class _Budget:
    def __init__(self, entries: int) -> None:
        self.left = entries
        self.truncated = False


def _dir_bytes(path: Path, budget: _Budget) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed), walking at
    most ``budget.left`` entries."""
    total = 0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    if budget.left <= 0:
                        budget.truncated = True
                        return total
                    budget.left -= 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # removed while we looked
        except OSError:
            continue  # not there (any more), or not readable
    return total


def _is_uri(location: str) -> bool:
    head, sep, _ = location.partition("://")
    return bool(sep) and bool(head)


def _rag_roots(tenant: str, home: Path) -> tuple[list[Path], list[str]]:
    """Local folders holding ``tenant``'s collections (the tenant's own folder first,
    then registered roots outside it), and the object-store roots not counted."""
    base = home / "rag" / tenant
    roots = [base]
    skipped: list[str] = []
    registry = base / "_registry"
    try:
        entries = sorted(registry.glob("*.json"))
    except OSError:
        entries = []
    for entry in entries[:10_000]:
        try:
            data = json.loads(entry.read_bytes())
            root = data.get("root") if isinstance(data, dict) else None
        except (OSError, ValueError):
            continue
        if not isinstance(root, str) or not root:
            continue
        if _is_uri(root):
            skipped.append(root)
            continue
        path = Path(root).expanduser().resolve()
        if path != base and base not in path.parents:
            roots.append(path)
    return roots, skipped


def _adapter_dirs(tenant: str, adapters_root: Path) -> list[Path]:
    """Registry entries that belong to ``tenant``: those in its own namespace
    (``<root>/_tenants/<tenant>/``) and old-layout ones whose metadata names it."""
    out = []
    try:
        own = sorted(adapters_root.joinpath("_tenants", tenant).iterdir())
        out += [e for e in own[:100_000] if not e.name.startswith(".")]
    except OSError:
        pass
    try:
        entries = sorted(adapters_root.iterdir())
    except OSError:
        return out
    for entry in entries[:100_000]:
        meta = entry / _ADAPTER_META
        try:
            data = json.loads(meta.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("tenant") == tenant:
            out.append(entry)
    return out


def measure(
    db: Database,
    tenant: str,
    home: str | Path,
    adapters_root: str | Path | None = None,
    *,
    max_entries: int = MAX_SCAN_ENTRIES,
) -> StorageReport:
    """Measure ``tenant``'s stored bytes now (see the module's docstring for what
    counts). ``adapters_root`` defaults to ``<home>/adapters``."""
    started = time.time()  # what the report is "as of": writes after it may be missed
    home_path = Path(home).expanduser().resolve()
    adapters = home_path / "adapters"
    if adapters_root:
        adapters = Path(adapters_root).expanduser().resolve()
    store = tenant_bytes(db, tenant)
    budget = _Budget(max_entries)
    roots, skipped = _rag_roots(tenant, home_path)
    rag = sum(_dir_bytes(r, budget) for r in roots)
    adapter_bytes = sum(_dir_bytes(d, budget) for d in _adapter_dirs(tenant, adapters))
    return StorageReport(
        tenant=tenant,
        total=sum(store.values()) + rag + adapter_bytes,
        store=store,
        rag=rag,
        adapters=adapter_bytes,
        measured_at=started,
        truncated=budget.truncated,
        skipped=tuple(skipped),
    )


def _size(n: int) -> str:
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def storage_error(
    tenant: str, plan_name: str, report: StorageReport, limit: int, incoming: int = 0
) -> QuotaExceededError:
    """The 429 for a tenant at (or, with ``incoming``, about to pass) its storage
    limit: how much is used, the limit, and how to get under it."""
    what = f" and this write adds {_size(incoming)}" if incoming else ""
    return QuotaExceededError(
        f"Tenant {tenant!r} stores {_size(report.total)} ({report.total:,} bytes){what}; "
        f"its {plan_name} plan allows {_size(limit)} ({limit:,} bytes). New data is "
        "refused until it is under the limit.",
        fix="Delete data it no longer needs (finished runs: DELETE /v1/runs/{id} or "
        "RunStore.delete_run; agent threads: DELETE /v1/threads/{agent}/{thread}; RAG "
        "collections: `lumos rag delete --collection NAME --all`; adapters: "
        "AdapterRegistry.remove), or move the tenant to a larger plan "
        f"(`lumos tenants set-plan {tenant} PLAN`). Storage is measured again at most "
        f"every {STORAGE_SCAN_S:g} s.",
        retry_after_s=int(STORAGE_SCAN_S),
        metric="storage_bytes",
        used=report.total,
        limit=limit,
        plan=plan_name,
    )
