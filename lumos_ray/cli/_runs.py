"""`lumos run`, `lumos runs ...`, `lumos submit` (`lumos jobs ...` is in ``_jobs``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import click

from lumos_ray.cli._common import address_option, echo_json, emit, json_option
from lumos_ray.errors import InputValidationError

__all__ = ["register"]


def _parse_input(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputValidationError(
            f"--input is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            fix='Pass a JSON value, e.g. --input \'{"topic": "ray"}\' (mind the shell quoting).',
        ) from None


def _connect(address: str | None) -> bool:
    """Connect; returns True when the cluster is embedded in this process."""
    from lumos_ray import runtime

    return runtime.connect(address=address).embedded


def _connect_for_reads(address: str | None) -> None:
    """Read-only commands on the embedded default read the local store directly
    (no cluster to start); with an address they ask the cluster's runner."""
    from lumos_ray.config import LumosSettings

    if not LumosSettings.from_env(address=address).embedded:
        _connect(address)


def _when(raw: str | None, flag: str) -> float | None:
    """Unix seconds or an ISO date/time (local time when it has no zone)."""
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    from datetime import datetime

    try:
        return datetime.fromisoformat(raw).timestamp()
    except ValueError:
        raise InputValidationError(
            f"{flag} {raw!r} is neither Unix seconds nor an ISO date/time.",
            fix=f"Pass e.g. {flag} 2026-12-01 or {flag} 2026-12-01T08:00:00+00:00.",
        ) from None


def _event_line(ev: Any) -> str:
    d = dict(ev.data or {})
    d.pop("t", None)
    step = d.pop("step", None)
    if ev.type == "token":
        return d.get("delta", "")
    detail = " ".join(f"{k}={v}" for k, v in d.items() if k not in ("kind",))
    return f"[{ev.seq:>4}] {ev.type:<15} {step or ''} {detail}".rstrip()


async def _follow(run_id: str, as_json: bool) -> tuple[Any, list[dict[str, Any]]]:
    from lumos_ray.workflows._runs import follow_run, get_run

    seen: list[dict[str, Any]] = []
    async for ev in follow_run(run_id):
        seen.append(ev.model_dump())
        if not as_json:
            line = _event_line(ev)
            click.echo(line, nl=ev.type != "token")
    return await get_run(run_id), seen


def _drive(begin: Callable[[], Awaitable[tuple[str, str]]], as_json: bool) -> None:
    """Start or resume a run, follow its events to the end, print the outcome."""

    async def go() -> None:
        run_id, note = await begin()
        if not as_json:
            click.echo(note)
        info, events = await _follow(run_id, as_json)
        _finish(info, events, as_json)

    asyncio.run(go())


def _finish(info: Any, events: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        emit({"run": info.model_dump(), "events": events}, True)
    else:
        click.echo(f"run {info.id}: {info.status}")
        if info.status == "succeeded":
            click.echo(json.dumps(info.output, indent=2, default=str))
        elif info.status == "suspended":
            s = info.suspended or {}
            click.echo(f"waiting for input at step {s.get('step')}: {s.get('prompt')}")
            if s.get("schema"):
                click.echo(f"input schema: {json.dumps(s['schema'])}")
            click.echo(f"resume with: lumos runs resume {info.id} --input JSON")
        elif info.status == "failed":
            err = info.error or {}
            click.secho(f"error: {err.get('message')}", fg="red", err=True)
            if err.get("fix"):
                click.echo(f"  How to fix: {err['fix']}", err=True)
    if info.status in ("failed", "cancelled"):
        raise SystemExit(1)


def register(cli: click.Group) -> None:
    @cli.command("run")
    @click.argument("workflow")
    @click.option("--input", "input_json", default=None, help="Run input as JSON.")
    @address_option
    @json_option
    def run_cmd(workflow: str, input_json: str | None, address: str | None, as_json: bool) -> None:
        """Run WORKFLOW (a YAML file or a registered name) and follow its events."""
        from lumos_ray.workflows._definition import get_workflow
        from lumos_ray.workflows._runs import start_run

        wf = get_workflow(workflow)
        data = _parse_input(input_json)
        _connect(address)

        async def begin() -> tuple[str, str]:
            from lumos_ray import tracing

            # The run joins this span's trace: one trace from the command down to the
            # agents, the gateway and the model replicas.
            with tracing.span("lumos.run", workflow=wf.name) as sp:
                run_id = await start_run(wf, data)
                sp.set_attribute("run_id", run_id)
            return run_id, f"run {run_id} started ({wf.name})"

        _drive(begin, as_json)

    @cli.group("runs")
    def runs() -> None:
        """Inspect and control workflow runs."""

    @runs.command("list")
    @click.option("--status", default=None, help="Only runs in this state.")
    @click.option("--limit", default=50, show_default=True)
    @address_option
    @json_option
    def runs_list(status: str | None, limit: int, address: str | None, as_json: bool) -> None:
        """List recent runs."""
        from lumos_ray.workflows._runs import list_runs

        _connect_for_reads(address)
        items = [r.model_dump() for r in asyncio.run(list_runs(status, limit))]

        def human(rows: list[dict[str, Any]]) -> str:
            if not rows:
                return "no runs"
            lines = [f"{'ID':<22} {'WORKFLOW':<20} {'STATUS':<10} CREATED"]
            for r in rows:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
                lines.append(f"{r['id']:<22} {r['workflow']:<20} {r['status']:<10} {when}")
            return "\n".join(lines)

        emit(items, as_json, human)

    @runs.command("show")
    @click.argument("run_id")
    @click.option("--events/--no-events", default=True)
    @address_option
    @json_option
    def runs_show(run_id: str, events: bool, address: str | None, as_json: bool) -> None:
        """Show a run's state, output and events."""
        from lumos_ray.workflows._runs import get_run, runner_client

        _connect_for_reads(address)

        async def go() -> dict[str, Any]:
            info = (await get_run(run_id)).model_dump()
            if events:
                items, _ = await runner_client().events(run_id, 0, 0.0)
                info["events"] = items
            return info

        data = asyncio.run(go())

        def human(d: dict[str, Any]) -> str:
            out = [f"run {d['id']} ({d['workflow']}): {d['status']}"]
            for k in ("input", "output", "error", "suspended"):
                if d.get(k) is not None:
                    out.append(f"{k}: {json.dumps(d[k], default=str)}")
            for ev in d.get("events", []):
                out.append(f"  [{ev['seq']:>4}] {ev['type']} {json.dumps(ev['data'], default=str)}")
            return "\n".join(out)

        emit(data, as_json, human)

    @runs.command("resume")
    @click.argument("run_id")
    @click.option("--input", "input_json", default=None, help="Input for a suspended step.")
    @address_option
    @json_option
    def runs_resume(
        run_id: str, input_json: str | None, address: str | None, as_json: bool
    ) -> None:
        """Continue a suspended, interrupted or failed run; finished steps are not re-run."""
        from lumos_ray.workflows._runs import resume_run

        data = _parse_input(input_json)
        _connect(address)

        async def begin() -> tuple[str, str]:
            info = await resume_run(run_id, data)
            return info.id, f"run {info.id} resumed"

        _drive(begin, as_json)

    @runs.command("cancel")
    @click.argument("run_id")
    @address_option
    @json_option
    def runs_cancel(run_id: str, address: str | None, as_json: bool) -> None:
        """Cancel a run (its running steps are cancelled on the cluster)."""
        from lumos_ray.workflows._runs import cancel_run

        _connect(address)
        info = asyncio.run(cancel_run(run_id))
        emit(info.model_dump(), as_json, f"run {info.id}: {info.status}")

    @runs.command("events")
    @click.argument("run_id")
    @click.option("--after", default=0, help="Only events after this sequence number.")
    @click.option("--follow/--no-follow", default=False, help="Keep streaming until it ends.")
    @address_option
    @json_option
    def runs_events(
        run_id: str, after: int, follow: bool, address: str | None, as_json: bool
    ) -> None:
        """Print a run's events (JSON lines with --json)."""
        from lumos_ray.workflows._runs import follow_run, runner_client

        _connect_for_reads(address)

        async def go() -> None:
            if follow:
                async for ev in follow_run(run_id, after):
                    if as_json:
                        echo_json(ev.model_dump_json())
                    else:
                        click.echo(_event_line(ev))
            else:
                items, _ = await runner_client().events(run_id, after, 0.0)
                for it in items:
                    echo_json(json.dumps(it, default=str))

        asyncio.run(go())

    @runs.command("export")
    @click.option("--out", "out", required=True, help="JSONL file to write.")
    @click.option("--workflow", default=None, help="Only runs of this workflow.")
    @click.option("--agent", default=None, help="Only this agent's threads.")
    @click.option(
        "--status", default="succeeded", show_default=True, help="Run state ('any' for all)."
    )
    @click.option("--since", default=None, help="Runs created at/after (Unix s or ISO time).")
    @click.option("--until", default=None, help="Runs created before (Unix s or ISO time).")
    @click.option("--min-score", type=float, default=None, help="Only runs scored at least.")
    @click.option("--tool-calls-only", is_flag=True, help="Only threads that called a tool.")
    @click.option("--max-row-bytes", default=1_000_000, show_default=True)
    @click.option("--strict", is_flag=True, help="Fail on an oversized row (default: skip).")
    @json_option
    def runs_export(
        out: str,
        workflow: str | None,
        agent: str | None,
        status: str,
        since: str | None,
        until: str | None,
        min_score: float | None,
        tool_calls_only: bool,
        max_row_bytes: int,
        strict: bool,
        as_json: bool,
    ) -> None:
        """Export finished runs' agent threads as a chat-with-tools JSONL dataset
        (OpenAI fine-tuning shape), from this tenant's store."""
        from lumos_ray.finetune import export_dataset

        stats = export_dataset(
            out,
            workflow=workflow,
            agent=agent,
            status=None if status == "any" else status,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            min_score=min_score,
            require_tool_calls=tool_calls_only,
            max_row_bytes=max_row_bytes,
            strict=strict,
        )

        def human(d: dict[str, Any]) -> str:
            skipped = {k: v for k, v in d.items() if k.startswith("skipped_") and v}
            text = f"wrote {d['rows']} rows to {d['out']} ({d['runs_seen']} runs read"
            text += "".join(
                f", {k.removeprefix('skipped_')}: {v} skipped" for k, v in skipped.items()
            )
            return text + ")" + "".join(f"\nnote: {n}" for n in d["notes"])

        emit(stats.to_dict(), as_json, human)

    @runs.command("score")
    @click.argument("run_id")
    @click.argument("score", type=float)
    @click.option("--note", default="", help="Why (kept with the score).")
    @json_option
    def runs_score(run_id: str, score: float, note: str, as_json: bool) -> None:
        """Give a run a quality score; `runs export --min-score` filters on it."""
        from lumos_ray.finetune import set_run_score
        from lumos_ray.store import open_store

        set_run_score(open_store(), run_id, score, note)
        emit({"run_id": run_id, "score": score}, as_json, f"run {run_id}: score {score}")

    # -- Ray Jobs ------------------------------------------------------------------
    @cli.command("submit")
    @click.argument("workflow_file", type=click.Path(exists=True, dir_okay=False))
    @click.option("--input", "input_json", default=None, help="Run input as JSON.")
    @click.option(
        "--address",
        required=True,
        envvar="LUMOS_JOBS_ADDRESS",
        help="Ray dashboard/Jobs address, e.g. http://127.0.0.1:8265.",
    )
    @click.option("--wait/--no-wait", default=False, help="Wait for the job and print its logs.")
    @json_option
    def submit(
        workflow_file: str, input_json: str | None, address: str, wait: bool, as_json: bool
    ) -> None:
        """Run a workflow on a remote Ray cluster as a Ray job (`lumos jobs` follows,
        shows and stops it). With --wait, the run the job returned is printed."""
        from lumos_ray.cli._jobs import submit_workflow_job, wait_job
        from lumos_ray.workflows._definition import load_workflow

        load_workflow(workflow_file)  # fail here, not on the cluster
        _parse_input(input_json)
        job_id = submit_workflow_job(address, workflow_file, input_json)
        result: dict[str, Any] = {"job_id": job_id, "address": address}
        if wait:
            result.update(wait_job(address, job_id))
        emit(result, as_json, lambda r: _job_text(r))
        if wait and result.get("status") != "SUCCEEDED":
            raise SystemExit(1)


def _job_text(r: dict[str, Any]) -> str:
    lines = [f"job {r['job_id']} submitted to {r['address']}"]
    if "status" in r:
        lines.append(f"status: {r['status']}")
        run = (r.get("result") or {}).get("run") if isinstance(r.get("result"), dict) else None
        if run:
            lines.append(f"run {run.get('id')}: {run.get('status')}")
            lines.append(json.dumps(run.get("output"), indent=2, default=str))
        elif r.get("error"):
            lines.append(f"error: {r['error'].get('message')}")
        else:
            lines.append(r.get("logs", ""))
    else:
        lines.append(f"follow it with: lumos jobs status {r['job_id']} --address {r['address']}")
    return "\n".join(lines)
