"""`lumos runs checkpoints|replay|fork` (time travel) and `lumos schedules ...`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import click

from lumos_ray.cli._common import address_option, emit, json_option
from lumos_ray.errors import InputValidationError

__all__ = ["register"]


def _json_arg(raw: str, what: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputValidationError(
            f"{what} is not valid JSON: {exc.msg} (column {exc.colno})",
            fix="Pass a JSON value (mind the shell quoting), e.g. '5' or '\"text\"'.",
        ) from None


def _step(raw: str) -> str | int:
    """A checkpoint path, or its index in `lumos runs checkpoints`."""
    return int(raw) if raw.isdigit() else raw


def _edits(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        path, sep, raw = pair.partition("=")
        if not sep or not path:
            raise InputValidationError(
                f"--set {pair!r} is not PATH=JSON.", fix="e.g. --set '1.draft=\"new text\"'"
            )
        out[path] = _json_arg(raw, f"--set {path}")
    return out


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _connect(address: str | None) -> None:
    from lumos_ray import runtime

    runtime.connect(address=address)


def register(cli: click.Group) -> None:
    runs = cli.commands.get("runs")
    if isinstance(runs, click.Group):
        _register_time_travel(runs)
    _register_schedules(cli)


def _register_time_travel(runs: click.Group) -> None:
    @runs.command("checkpoints")
    @click.argument("run_id")
    @address_option
    @json_option
    def runs_checkpoints(run_id: str, address: str | None, as_json: bool) -> None:
        """A run's checkpoints in the order its steps finished (replay/fork points)."""
        from lumos_ray.workflows import list_checkpoints

        _connect(address)
        cps = asyncio.run(list_checkpoints(run_id))
        text = "\n".join(
            f"{c.index:>3}  {c.path}  {json.dumps(c.output, default=str)[:80]}" for c in cps
        )
        emit([c.model_dump() for c in cps], as_json, text or "(no checkpoints)")

    @runs.command("replay")
    @click.argument("run_id")
    @click.option("--from", "from_step", required=True, help="Checkpoint path or index.")
    @address_option
    @json_option
    def runs_replay(run_id: str, from_step: str, address: str | None, as_json: bool) -> None:
        """Start a new run that keeps the steps finished before --from and runs the rest."""
        from lumos_ray.workflows import replay_run

        _connect(address)
        new_id = asyncio.run(replay_run(run_id, _step(from_step)))
        emit({"run_id": new_id, "from_run": run_id}, as_json, f"run {new_id} replays {run_id}")

    @runs.command("fork")
    @click.argument("run_id")
    @click.option("--from", "from_step", required=True, help="Checkpoint path or index.")
    @click.option("--set", "edits", multiple=True, help="PATH=JSON: a kept step's new output.")
    @click.option("--input", "input_json", default=None, help="A new run input (JSON).")
    @address_option
    @json_option
    def runs_fork(
        run_id: str,
        from_step: str,
        edits: tuple[str, ...],
        input_json: str | None,
        address: str | None,
        as_json: bool,
    ) -> None:
        """Start a new run from a checkpoint of RUN_ID with edited state; RUN_ID is kept."""
        from lumos_ray.workflows import fork_run

        outputs = _edits(edits)
        kwargs: dict[str, Any] = {"outputs": outputs}
        if input_json is not None:
            kwargs["input"] = _json_arg(input_json, "--input")
        _connect(address)
        new_id = asyncio.run(fork_run(run_id, _step(from_step), **kwargs))
        emit({"run_id": new_id, "from_run": run_id}, as_json, f"run {new_id} forks {run_id}")


def _register_schedules(cli: click.Group) -> None:
    @cli.group("schedules")
    def schedules() -> None:
        """Runs of a workflow on a cron expression or a period (durable)."""

    @schedules.command("create")
    @click.argument("workflow")
    @click.option("--id", "schedule_id", required=True, help="A name for the schedule.")
    @click.option("--cron", default=None, help="5 fields, or 6 with seconds last.")
    @click.option("--every", "every_s", type=float, default=None, help="Period in seconds.")
    @click.option("--input", "input_json", default=None, help="Run input (JSON).")
    @click.option("--catchup", type=click.Choice(["all", "latest"]), default="all")
    @address_option
    @json_option
    def schedules_create(
        workflow: str,
        schedule_id: str,
        cron: str | None,
        every_s: float | None,
        input_json: str | None,
        catchup: str,
        address: str | None,
        as_json: bool,
    ) -> None:
        """Run WORKFLOW (a name or YAML path) on every tick."""
        from lumos_ray.workflows import create_schedule

        data = None if input_json is None else _json_arg(input_json, "--input")
        _connect(address)
        info = asyncio.run(
            create_schedule(
                workflow,
                schedule_id=schedule_id,
                cron=cron,
                every_s=every_s,
                input=data,
                catchup=catchup,
            )
        )
        emit(info.model_dump(), as_json, f"schedule {info.id}: next {_when(info.next_fire)}")

    @schedules.command("list")
    @click.option("--status", type=click.Choice(["active", "cancelled"]), default=None)
    @address_option
    @json_option
    def schedules_list(status: str | None, address: str | None, as_json: bool) -> None:
        """The tenant's schedules."""
        from lumos_ray.workflows import list_schedules

        _connect(address)
        rows = asyncio.run(list_schedules(status))
        text = "\n".join(
            f"{s.id}  {s.workflow}@{s.version}  {s.cron or f'every {s.every_s:g}s'}  "
            f"{s.status}  fired {s.fired}  next {_when(s.next_fire)}"
            for s in rows
        )
        emit([s.model_dump() for s in rows], as_json, text or "(no schedules)")

    @schedules.command("cancel")
    @click.argument("schedule_id")
    @address_option
    @json_option
    def schedules_cancel(schedule_id: str, address: str | None, as_json: bool) -> None:
        """Stop a schedule (runs already started go on)."""
        from lumos_ray.workflows import cancel_schedule

        _connect(address)
        info = asyncio.run(cancel_schedule(schedule_id))
        emit(info.model_dump(), as_json, f"schedule {info.id}: {info.status}")
