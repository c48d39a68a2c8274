"""`lumos tenants|keys|usage|audit`: the platform's administration commands.

They work on the store's database directly (``LUMOS_STORE_URL``; plans from
``LUMOS_PLANS_FILE``), as its operator: no cluster is started and no API key is
needed, because whoever can reach the database can already change every row. Every
change is recorded in the tenant's audit log with the actor ``cli:<user>``.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import io
import json
import os
import sys
import time
from typing import Any

import click

from lumos_ray.cli._common import echo_json, emit, json_option

__all__ = ["register"]

_CSV_FIELDS = (
    "tenant",
    "day",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "embedding_inputs",
    "agent_seconds",
    "storage_bytes",
)


def _platform() -> Any:
    from lumos_ray.platform import Platform

    return Platform()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (KeyError, OSError):  # no user name in some containers
        return "cli"


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _expiry(expires_in_days: float | None) -> float | None:
    if expires_in_days is None:
        return None
    if expires_in_days <= 0:
        from lumos_ray.errors import InputValidationError

        raise InputValidationError(
            f"--expires-in-days {expires_in_days} must be positive.",
            fix="Pass a number of days, e.g. --expires-in-days 90 (omit it for no expiry).",
        )
    return time.time() + expires_in_days * 86400


def _tenant_option(fn: Any) -> Any:
    return click.option(
        "--tenant",
        default=None,
        help="Only this tenant (default: every tenant).",
    )(fn)


def register(cli: click.Group) -> None:
    _register_tenants(cli)
    _register_keys(cli)
    _register_usage(cli)
    _register_audit(cli)


def _register_tenants(cli: click.Group) -> None:
    @cli.group("tenants")
    def tenants() -> None:
        """Tenants and their plans."""

    @tenants.command("create")
    @click.argument("name")
    @click.option("--plan", default=None, help="Plan name (default: the plans' default).")
    @json_option
    def create(name: str, plan: str | None, as_json: bool) -> None:
        """Create tenant NAME."""
        t = _platform().create_tenant(name, plan, actor=_actor())
        emit(
            {"tenant": t.name, "plan": t.plan, "created_at": t.created_at},
            as_json,
            f"created tenant {t.name} on plan {t.plan}",
        )

    @tenants.command("list")
    @json_option
    def list_(as_json: bool) -> None:
        """List tenants and their plans."""
        rows = [
            {"tenant": t.name, "plan": t.plan, "created_at": t.created_at}
            for t in _platform().list_tenants()
        ]

        def human(items: list[dict[str, Any]]) -> str:
            if not items:
                return "no tenants (create one with `lumos tenants create NAME`)"
            lines = [f"{'TENANT':<30} {'PLAN':<14} CREATED"]
            lines += [f"{r['tenant']:<30} {r['plan']:<14} {_iso(r['created_at'])}" for r in items]
            return "\n".join(lines)

        emit(rows, as_json, human)

    @tenants.command("set-plan")
    @click.argument("name")
    @click.argument("plan")
    @json_option
    def set_plan(name: str, plan: str, as_json: bool) -> None:
        """Move tenant NAME to PLAN (audited as plan.changed)."""
        t = _platform().set_plan(name, plan, actor=_actor())
        emit({"tenant": t.name, "plan": t.plan}, as_json, f"tenant {t.name} is on plan {t.plan}")


def _register_keys(cli: click.Group) -> None:
    @cli.group("keys")
    def keys() -> None:
        """API keys (stored hashed; a key is shown once, when it is created)."""

    @keys.command("create")
    @click.argument("tenant")
    @click.option(
        "--role",
        type=click.Choice(["viewer", "developer", "admin"]),
        default="developer",
        show_default=True,
    )
    @click.option("--name", default=None, help="A label for the key (e.g. 'ci').")
    @click.option("--expires-in-days", type=float, default=None, help="Expire after N days.")
    @json_option
    def create(
        tenant: str, role: str, name: str | None, expires_in_days: float | None, as_json: bool
    ) -> None:
        """Create a key for TENANT and print it (the only time it is shown)."""
        k = _platform().create_key(
            tenant, role, name=name, expires_at=_expiry(expires_in_days), actor=_actor()
        )
        data = {
            "tenant": k.tenant,
            "key_id": k.key_id,
            "role": k.role.value,
            "name": k.name,
            "expires_at": k.expires_at,
            "key": k.secret_shown_once,
        }
        emit(
            data,
            as_json,
            lambda d: (
                f"{d['key']}\n"
                f"key {d['key_id']} ({d['role']}) for tenant {d['tenant']}, expires "
                f"{_iso(d['expires_at']) if d['expires_at'] else 'never'}.\n"
                "Store it now: it is kept only as a hash and cannot be shown again."
            ),
        )

    @keys.command("list")
    @click.argument("tenant")
    @json_option
    def list_(tenant: str, as_json: bool) -> None:
        """List TENANT's keys (ids, roles, status; never secrets)."""
        now = time.time()
        rows = [k.to_dict(now) for k in _platform().list_keys(tenant)]

        def human(items: list[dict[str, Any]]) -> str:
            if not items:
                return f"no keys for tenant {tenant}"
            lines = [f"{'KEY ID':<18} {'ROLE':<10} {'STATUS':<8} {'EXPIRES':<21} NAME"]
            for r in items:
                lines.append(
                    f"{r['key_id']:<18} {r['role']:<10} {r['status']:<8} "
                    f"{_iso(r['expires_at']):<21} {r['name'] or ''}"
                )
            return "\n".join(lines)

        emit(rows, as_json, human)

    @keys.command("revoke")
    @click.argument("tenant")
    @click.argument("key_id")
    @json_option
    def revoke(tenant: str, key_id: str, as_json: bool) -> None:
        """Revoke TENANT's key KEY_ID (refused from the next request on)."""
        info = _platform().revoke_key(tenant, key_id, actor=_actor())
        emit(info.to_dict(time.time()), as_json, f"revoked key {key_id} of tenant {tenant}")


def _register_usage(cli: click.Group) -> None:
    @cli.group("usage")
    def usage() -> None:
        """Metered usage per tenant and UTC day."""

    @usage.command("show")
    @_tenant_option
    @click.option("--since", default=None, help="First day, YYYY-MM-DD (inclusive).")
    @click.option("--until", default=None, help="Last day, YYYY-MM-DD (inclusive).")
    @json_option
    def show(tenant: str | None, since: str | None, until: str | None, as_json: bool) -> None:
        """Show usage per day (and, for one tenant, this month's quota)."""
        p = _platform()
        # The quota first: it measures the tenant's storage, metered as today's gauge.
        quota = p.quota_status(tenant) if tenant is not None else None
        days = [d.to_dict() for d in p.usage(tenant, since=since, until=until)]
        data: dict[str, Any] = {"days": days}
        if quota is not None:
            data["quota"] = quota

        def human(d: dict[str, Any]) -> str:
            lines = [
                f"{'TENANT':<20} {'DAY':<10} {'REQUESTS':>9} {'PROMPT':>9} {'COMPL':>9} "
                f"{'EMBED':>7} {'AGENT-S':>9} {'STORAGE':>12}"
            ]
            for r in d["days"]:
                lines.append(
                    f"{r['tenant']:<20} {r['day']:<10} {r['requests']:>9} "
                    f"{r['prompt_tokens']:>9} {r['completion_tokens']:>9} "
                    f"{r['embedding_inputs']:>7} {r['agent_seconds']:>9.1f} "
                    f"{'-' if r['storage_bytes'] is None else r['storage_bytes']:>12}"
                )
            if not d["days"]:
                lines.append("(no usage recorded)")
            q = d.get("quota")
            if q:
                lim = q["limits"]
                lines.append(
                    f"\n{q['tenant']} on plan {q['plan']}, {q['period']}: "
                    + ", ".join(
                        f"{m} {q['used'][m]:,}/{'unlimited' if lim[m] is None else f'{lim[m]:,}'}"
                        for m in q["used"]
                    )
                    + f"; agents {q['concurrent_agents']['live']}/"
                    + f"{q['concurrent_agents']['limit'] or 'unlimited'}"
                )
                st = q.get("storage")
                if st:
                    limit = "unlimited" if st["limit"] is None else f"{st['limit']:,}"
                    lines.append(
                        f"storage {st['used']:,}/{limit} bytes"
                        + (" (at least: the scan stopped early)" if st["truncated"] else "")
                        + (
                            " - OVER THE LIMIT: new data is refused"
                            if st["limit"] is not None and st["used"] >= st["limit"]
                            else ""
                        )
                    )
            return "\n".join(lines)

        emit(data, as_json, human)

    @usage.command("export")
    @_tenant_option
    @click.option("--since", default=None, help="First day, YYYY-MM-DD (inclusive).")
    @click.option("--until", default=None, help="Last day, YYYY-MM-DD (inclusive).")
    @click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv")
    @click.option("--output", "-o", default=None, help="Write to this file (0600), not stdout.")
    def export(
        tenant: str | None, since: str | None, until: str | None, fmt: str, output: str | None
    ) -> None:
        """Export usage rows for billing, as CSV (one row per tenant and day) or JSON."""
        days = [d.to_dict() for d in _platform().usage(tenant, since=since, until=until)]
        if fmt == "json":
            text = json.dumps(days, indent=2) + "\n"
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
            writer.writeheader()
            for row in days:
                writer.writerow({k: "" if row[k] is None else row[k] for k in _CSV_FIELDS})
            text = buf.getvalue()
        if output is None:
            click.echo(text, nl=False)
            return
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        click.echo(f"wrote {len(days)} rows to {output}", err=True)


def _register_audit(cli: click.Group) -> None:
    @cli.group("audit")
    def audit() -> None:
        """The hash-chained audit log."""

    @audit.command("verify")
    @_tenant_option
    @json_option
    def verify(tenant: str | None, as_json: bool) -> None:
        """Check every entry's hash and chain link; name the first bad entry. Exits 1
        when a chain is broken."""
        reports = [r.to_dict() for r in _platform().verify_audit(tenant)]
        if as_json:
            echo_json(json.dumps(reports, indent=2))
        else:
            if not reports:
                click.echo("no audit entries")
            for r in reports:
                if r["ok"]:
                    click.echo(
                        f"{r['tenant']}: ok, {r['entries']} entries, head {r['head_seq']} "
                        f"{r['head_hash']}"
                    )
                else:
                    click.secho(
                        f"{r['tenant']}: BROKEN at entry {r['first_bad_seq']}: {r['problem']}",
                        fg="red",
                        err=True,
                    )
        if any(not r["ok"] for r in reports):
            sys.exit(1)

    @audit.command("tail")
    @click.option("--tenant", default=None, help="Tenant (default: LUMOS_TENANT).")
    @click.option("-n", "limit", type=int, default=20, show_default=True)
    @json_option
    def tail(tenant: str | None, limit: int, as_json: bool) -> None:
        """Show a tenant's newest audit entries."""
        from lumos_ray.config import LumosSettings

        name = tenant or LumosSettings.from_env().tenant_id
        rows = [e.to_dict() for e in _platform().audit_tail(name, limit)]

        def human(items: list[dict[str, Any]]) -> str:
            if not items:
                return f"no audit entries for tenant {name}"
            return "\n".join(
                f"{r['seq']:>6} {_iso(r['ts'])} {r['actor']:<24} {r['action']:<20} "
                f"{r['target']} {json.dumps(r['detail']) if r['detail'] else ''}".rstrip()
                for r in items
            )

        emit(rows, as_json, human)
