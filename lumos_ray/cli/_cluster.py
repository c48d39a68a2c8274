"""`lumos up`, `lumos down`, `lumos status`: a persistent local Ray cluster that later
commands (and ``lumos_ray.connect()``) use without starting their own."""

from __future__ import annotations

from typing import Any

import click

from lumos_ray.cli._common import emit, json_option

__all__ = ["register"]


def _up_text(d: dict[str, Any]) -> str:
    head = "already running" if d.get("already_running") else f"started in {d['start_s']} s"
    lines = [f"local Ray cluster {head}: {d['address']}"]
    if d.get("dashboard_url"):
        lines.append(f"  jobs/dashboard: {d['dashboard_url']}  (--address for lumos submit)")
    lines.append(f"  temp dir: {d['temp_dir']}")
    lines.append("  every lumos command in this project uses it now; `lumos down` stops it")
    return "\n".join(lines)


def _down_text(d: dict[str, Any]) -> str:
    if not d.get("stopped"):
        return f"nothing to stop: {d.get('reason')}"
    text = f"stopped {d['address']} ({len(d['pids'])} processes)"
    if d.get("left"):
        text += f"\n  still alive (check them): {d['left']}"
    return text


def _status_text(d: dict[str, Any]) -> str:
    state = "running" if d["running"] else "NOT answering (stale: run `lumos down`)"
    lines = [f"local Ray cluster {d['address']}: {state}"]
    if d.get("dashboard_url"):
        lines.append(f"  jobs/dashboard: {d['dashboard_url']}")
    for n in d.get("nodes", []):
        res = ", ".join(
            f"{k}={v:g}" for k, v in sorted(n["resources"].items()) if not k.startswith("node:")
        )
        lines.append(f"  node {n['node_id'][:12]} {'alive' if n['alive'] else 'dead'}: {res}")
        if n.get("labels"):
            lines.append(
                "    labels: " + ", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items()))
            )
    if d.get("available"):
        cpu = d["available"].get("CPU", 0.0)
        lines.append(f"  CPU free {cpu:g} of {d['resources'].get('CPU', 0.0):g}")
    return "\n".join(lines)


@click.command("up")
@click.option("--num-cpus", type=int, default=None, help="CPUs the cluster offers (default: all).")
@click.option(
    "--dashboard/--no-dashboard",
    default=True,
    help="Start Ray's dashboard (the Jobs API `lumos submit` uses); off starts faster.",
)
@json_option
def up_cmd(num_cpus: int | None, dashboard: bool, as_json: bool) -> None:
    """Start a local Ray cluster (127.0.0.1 only, token auth) that later commands use."""
    from lumos_ray.runtime import cluster_up

    emit(cluster_up(num_cpus=num_cpus, dashboard=dashboard), as_json, _up_text)


@click.command("down")
@json_option
def down_cmd(as_json: bool) -> None:
    """Stop the local cluster started by `lumos up` (every one of its processes)."""
    from lumos_ray.runtime import cluster_down

    emit(cluster_down(), as_json, _down_text)


@click.command("status")
@json_option
def status_cmd(as_json: bool) -> None:
    """Show the local cluster: address, nodes, resources."""
    from lumos_ray.runtime import cluster_status

    emit(cluster_status(), as_json, _status_text)


def register(group: click.Group) -> None:
    group.add_command(up_cmd)
    group.add_command(down_cmd)
    group.add_command(status_cmd)
