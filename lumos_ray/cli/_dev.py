"""`lumos dev [DIR]`: a local cluster and gateway for a project, reloaded on every save.

Starts (or attaches to) this project's ``lumos up`` cluster and a gateway (the runs
API and the dashboard; no model deployment: agents name their models), loads the
project's code and workflows, then watches them. A save that checks out becomes the
version the next run uses, without a restart and without touching threads
(:mod:`lumos_ray.workflows._reload` says how); a save with an error is printed as
``file:line: message`` and written to ``$LUMOS_HOME/dev-status.json`` (the dashboard's
banner), and the last good version keeps serving. Ctrl-C stops the watcher and only
what this command started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any

import click

from lumos_ray.cli._common import echo_json

__all__ = ["register"]

DEV_APP_NAME = "lumos-serve-dev"


def _say(as_json: bool, event: str, text: str, **data: Any) -> None:
    """One line per event: human text, or (--json) one JSON object per line."""
    if as_json:
        echo_json(json.dumps({"event": event, **data}, default=str))
    else:
        click.echo(text)


def _show_result(as_json: bool, result: Any, first: bool = False) -> None:
    problems = [p.to_dict() for p in result.problems]
    data = {
        "ok": result.ok,
        "errors": problems,
        "code_version": result.code_version,
        "code_reloaded": result.code_reloaded,
        "workflows": result.workflows,
        "seconds": round(result.seconds, 3),
        "check_s": round(result.check_s, 3),
        "runner_s": round(result.runner_s, 3),
    }
    if as_json:
        _say(True, "loaded" if first else "reload", "", **data)
        return
    parts = []
    if result.code_reloaded:
        parts.append(f"code {result.code_version}")
    parts += [f"workflow {n} {v}" for n, v in sorted(result.workflows.items())]
    what = ", ".join(parts) or "nothing new"
    head = "loaded" if first else "reloaded"
    if result.ok:
        click.secho(f"[dev] {head}: {what} ({result.seconds:.2f} s)", fg="green")
        return
    if parts:
        click.echo(f"[dev] {head}: {what} ({result.seconds:.2f} s)")
    for p in result.problems:
        click.secho(f"[dev] error: {p}", fg="red", err=True)
    click.echo("[dev] the last good version keeps serving; fix the file and save", err=True)


def _gateway(port: int) -> tuple[str, bool]:
    """(gateway URL, whether this command started it): a gateway of this home that
    answers is used as it is; otherwise the dev gateway is deployed."""
    import httpx

    from lumos_ray import serve
    from lumos_ray.runtime import current_settings
    from lumos_ray.serve._state import read_serve_state

    home = Path(current_settings().home).expanduser().resolve()
    with contextlib.suppress(Exception):
        url = str(read_serve_state(home / "serve.json").get("url") or "")
        root = url.removesuffix("/v1")
        if root and httpx.get(root + "/ready", timeout=5).status_code == 200:
            return root, False
    cfg = serve.ServeConfig(app_name=DEV_APP_NAME, gateway=serve.GatewayConfig(port=port))
    url = serve.start(cfg, models=False)
    return url.removesuffix("/v1"), True


def _gateway_into(port: int, out: dict[str, Any]) -> None:
    try:
        out["url"], out["started"] = _gateway(port)
    except BaseException as exc:  # re-raised in the main thread
        out["error"] = exc


def _watch(project: Path, reloader: Any, quiet_s: float, stop: threading.Event, as_json: bool):
    from watchfiles import watch

    from lumos_ray.workflows._reload_changes import Debouncer, classify, kind_of

    deb = Debouncer(quiet_s=quiet_s, max_wait_s=max(2.0, quiet_s))
    for changes in watch(
        project,
        watch_filter=lambda _c, p: kind_of(project, p) is not None,
        debounce=50,
        step=50,
        rust_timeout=100,
        yield_on_timeout=True,
        stop_event=stop,
        raise_interrupt=False,
    ):
        now = time.monotonic()
        deb.add(classify(project, changes), now)
        if deb.due(now):
            batch = deb.take()
            _say(
                as_json,
                "changed",
                "[dev] changed: " + ", ".join(sorted(batch.python | batch.workflows)),
                files=sorted(batch.python | batch.workflows),
            )
            try:
                _show_result(as_json, reloader.reload(batch))
            except Exception as exc:  # the watcher goes on; the error is shown
                from lumos_ray.workflows._reload import write_status
                from lumos_ray.workflows._reload_changes import Problem

                problem = Problem(".", 1, f"reload failed: {type(exc).__name__}: {exc}")
                write_status(reloader.home, [*reloader.problems(), problem])
                click.secho(f"[dev] error: {problem}", fg="red", err=True)


def register(cli: click.Group) -> None:
    @cli.command("dev")
    @click.argument("directory", default=".", type=click.Path(exists=True, file_okay=False))
    @click.option(
        "--port",
        default=8000,
        show_default=True,
        type=click.IntRange(0, 65535),
        help="Gateway port (when this command starts the gateway).",
    )
    @click.option(
        "--open/--no-open",
        "open_browser",
        default=True,
        show_default=True,
        help="Open the dashboard in a browser.",
    )
    @click.option(
        "--num-cpus",
        type=click.IntRange(1, 4096),
        default=None,
        help="CPUs of the cluster, when this command starts it (default: all).",
    )
    @click.option(
        "--quiet-ms",
        type=click.IntRange(50, 10_000),
        default=300,
        show_default=True,
        help="Reload once no file changed for this long.",
    )
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per event line.")
    def dev(
        directory: str,
        port: int,
        open_browser: bool,
        num_cpus: int | None,
        quiet_ms: int,
        as_json: bool,
    ) -> None:
        """Run the project in DIR on a local cluster and reload it on every save."""
        from lumos_ray import runtime
        from lumos_ray._files import private_dir
        from lumos_ray.workflows._reload import STATUS_FILE, DevReloader, stop_runner
        from lumos_ray.workflows._reload_changes import project_files

        project = Path(directory).resolve()
        project_files(project)  # within the bounds, before anything starts
        home = Path(os.environ.get("LUMOS_HOME") or project / ".lumos").expanduser().resolve()
        os.environ["LUMOS_HOME"] = str(home)
        reloader = DevReloader(project, home, tenant="default", install_runner=True)
        # The gateway finds workflows only among the staged (validated) copies.
        os.environ["LUMOS_WORKFLOWS_DIR"] = str(reloader.staging)
        # Not the project: Ray puts a driver's working directory on its workers'
        # sys.path, and only checked snapshots of the code may be imported.
        os.chdir(private_dir(reloader.dev_dir / "run"))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, _interrupt)
        started_cluster = started_gateway = installed = False
        try:
            _say(as_json, "starting", f"[dev] project {project}, home {home}", home=str(home))
            up = runtime.cluster_up(home, num_cpus=num_cpus, dashboard=False)
            started_cluster = not up["already_running"]
            _say(
                as_json,
                "cluster",
                f"[dev] cluster {up['address']} "
                + ("started" if started_cluster else "already running (attached)"),
                address=up["address"],
                started=started_cluster,
            )
            runtime.connect()
            reloader.tenant = runtime.current_settings().tenant_id
            installed = True
            # Serve's start is the slowest part: it goes on while the code is checked.
            gateway: dict[str, Any] = {}
            starter = threading.Thread(
                target=_gateway_into, args=(port, gateway), name="lumos-dev-gateway"
            )
            starter.start()
            try:
                _show_result(as_json, reloader.full(), first=True)
            finally:
                starter.join()
            if "error" in gateway:
                raise gateway["error"]
            url, started_gateway = gateway["url"], gateway["started"]
            ui = f"{url}/ui"
            _say(
                as_json,
                "ready",
                f"[dev] gateway {url} ({'started' if started_gateway else 'attached'})\n"
                f"[dev] dashboard {ui}\n"
                f"[dev] status {home / STATUS_FILE}\n"
                f"[dev] watching {project} (Ctrl-C to stop)",
                gateway=url,
                dashboard=ui,
                status=str(home / STATUS_FILE),
            )
            if open_browser:
                with contextlib.suppress(Exception):
                    webbrowser.open(ui)
            _watch(project, reloader, quiet_ms / 1000, stop, as_json)
        except KeyboardInterrupt:
            pass
        finally:
            # A second Ctrl-C or TERM must not cut the cleanup short.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            _say(as_json, "stopping", "[dev] stopping what lumos dev started")
            _cleanup(reloader, home, started_cluster, started_gateway, installed, stop_runner)


def _interrupt(*_: Any) -> None:
    """SIGTERM stops the command as Ctrl-C does (then the cleanup runs)."""
    raise KeyboardInterrupt


def _cleanup(
    reloader: Any,
    home: Path,
    started_cluster: bool,
    started_gateway: bool,
    installed: bool,
    stop_runner: Any,
) -> None:
    """Stop only what this command started: its cluster (everything in it), or else
    its gateway and the runner it installed; the status file goes too."""
    from lumos_ray import runtime, serve
    from lumos_ray.workflows._reload import STATUS_FILE

    with contextlib.suppress(Exception):
        if not started_cluster and runtime.is_connected():
            if started_gateway:
                serve.stop(DEV_APP_NAME)
            if installed:
                stop_runner(reloader.tenant)
    with contextlib.suppress(Exception):
        runtime.shutdown()
    if started_cluster:
        with contextlib.suppress(Exception):
            runtime.cluster_down(home)
        if started_gateway:  # it went with the cluster
            (home / "serve.json").unlink(missing_ok=True)
    (home / STATUS_FILE).unlink(missing_ok=True)
