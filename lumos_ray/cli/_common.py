"""Shared pieces of the CLI: the root group, `--json`, error rendering."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from lumos_ray.errors import LumosError

__all__ = ["address_option", "cli", "echo_json", "emit", "fail", "json_option", "run_cli"]

# With --json, stdout carries only the JSON: anything else that writes to sys.stdout
# (Ray's raylet warnings, a library's print) is sent to stderr while the command runs.
_json_out: Any = None


def echo_json(text: str) -> None:
    """Write machine-readable output to the real stdout."""
    click.echo(text, file=_json_out or sys.stdout)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lumos-ray", prog_name="lumos")
def cli() -> None:
    """lumos: a distributed runtime for AI agents on Ray."""


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every command takes --json for machine-readable output."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def address_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--address",
        default=None,
        envvar="LUMOS_RAY_ADDRESS",
        help="Ray cluster: 'auto', 'ray://HOST:PORT'; unset = embedded local cluster.",
    )(fn)


def emit(data: Any, as_json: bool, human: Callable[[Any], str] | str | None = None) -> None:
    """Print `data` as JSON, or as the human rendering."""
    if as_json:
        echo_json(json.dumps(data, indent=2, default=str))
    elif callable(human):
        click.echo(human(data))
    elif human is not None:
        click.echo(human)
    else:
        click.echo(json.dumps(data, indent=2, default=str))


def fail(err: LumosError, as_json: bool) -> None:
    if as_json:
        echo_json(json.dumps({"error": err.to_dict()}, indent=2, default=str))
    else:
        click.secho(f"Error {err.code}: {err.message}", fg="red", err=True)
        click.echo(f"  How to fix: {err.fix}", err=True)
    sys.exit(1)


def run_cli(argv: list[str] | None = None) -> None:
    """Run the root group; LumosErrors become a message and a fix, never a traceback."""
    global _json_out
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    if as_json:
        _json_out, sys.stdout = sys.stdout, sys.stderr
    was_connected = _ray_connected()
    try:
        _run(argv, as_json)
    finally:
        if _json_out is not None:
            sys.stdout, _json_out = _json_out, None
        if not was_connected:
            _disconnect()


def _ray_connected() -> bool:
    """Whether this process holds a Ray connection (without importing Ray)."""
    if "ray" not in sys.modules:
        return False
    from lumos_ray.runtime import is_connected

    return is_connected()


def _disconnect() -> None:
    """Drop the Ray connection this command made, now. Left to the interpreter's exit,
    Ray's own exit hook sleeps 0.5 s (so driver logs finish printing; the CLI does not
    stream them) and the teardown takes about 1 s in all, measured: most of what a
    `lumos rag query` against a running cluster costs. A connection that was there
    before the command (a caller running the CLI in-process) is left alone."""
    if _ray_connected():
        from lumos_ray.runtime import shutdown

        with contextlib.suppress(Exception):
            shutdown()


def _run(argv: list[str] | None, as_json: bool) -> None:
    try:
        cli.main(args=argv, prog_name="lumos", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except LumosError as err:
        fail(err, as_json)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # last resort: still no stack trace unless asked for
        cause = _unwrap(exc)
        if isinstance(cause, LumosError):
            fail(cause, as_json)
        if os.environ.get("LUMOS_DEBUG"):
            traceback.print_exc()
        fail(LumosError(f"{type(exc).__name__}: {exc}"), as_json)


def _unwrap(exc: BaseException) -> BaseException:
    """Ray wraps remote exceptions (RayTaskError); find the LumosError inside."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, LumosError):
            return cur
        inner = getattr(cur, "cause", None) or cur.__cause__
        cur = inner if isinstance(inner, BaseException) else None
        seen += 1
    return exc
