"""`lumos federate ...`: federated rounds simulated on Ray or deployed across sites.

Flower does the federating; these commands wire it to lumos: configs, certificates,
ports that never collide with Serve, per-round metrics, Ray jobs.
"""

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

from lumos_ray._files import open_private_append, private_dir, write_private_text
from lumos_ray.cli._common import address_option, emit, json_option
from lumos_ray.errors import ConfigError, FederationError

__all__ = ["register"]


@click.group("federate")
def federate() -> None:
    """Federated learning with Flower: simulate on Ray, or run across sites."""


def _load(config: str | None) -> Any:
    from lumos_ray.federated import FederationConfig, load_federation_config

    return load_federation_config(config) if config else FederationConfig()


def _deployment(cfg: Any, **over: Any) -> Any:
    from pydantic import ValidationError

    from lumos_ray.config import format_validation_error
    from lumos_ray.federated import DeploymentConfig

    data = cfg.deployment.model_dump()
    data.update({k: v for k, v in over.items() if v is not None})
    try:
        return DeploymentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"deployment settings: {format_validation_error(exc)}") from None


def _state_dir() -> Path:
    from lumos_ray.federated import federated_home

    return private_dir(federated_home() / "_processes")  # logs and pids: 0700


def _launch(cmd: list[str], name: str, detach: bool, as_json: bool, info: dict) -> None:
    """Foreground: become the Flower process (exec), so its PID is the one to stop.
    --detach: start it in its own session, log to a file, print the PID."""
    from lumos_ray.federated.deploy import process_env

    env = process_env()
    if not detach:
        if not as_json:
            click.echo(f"$ {' '.join(cmd)}", err=True)
        sys.stdout.flush()
        os.execvpe(cmd[0], cmd, env)
    log = _state_dir() / f"{name}.log"
    proc = subprocess.Popen(
        cmd,
        stdout=open_private_append(log),  # 0600: a process log
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    info = {**info, "pid": proc.pid, "log": str(log), "command": cmd}
    write_private_text(_state_dir() / f"{name}.json", json.dumps(info, indent=2))
    emit(info, as_json, f"started {name} (pid {proc.pid}); log: {log}")


@federate.command("certs")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--host", "hosts", multiple=True, help="SAN of the SuperLink cert (repeat).")
@click.option(
    "--supernode",
    "supernodes",
    multiple=True,
    help="Also make an auth key pair for this site name (repeat).",
)
@click.option("--days", default=30, show_default=True, type=int)
@click.option("--overwrite", is_flag=True)
@json_option
def certs(
    out_dir: str,
    hosts: tuple[str, ...],
    supernodes: tuple[str, ...],
    days: int,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Make a CA, a SuperLink TLS certificate and optional SuperNode auth keys."""
    from lumos_ray.federated._certs import generate_certs

    paths = generate_certs(
        out_dir,
        hosts=list(hosts) or None,
        supernodes=list(supernodes),
        days=days,
        overwrite=overwrite,
    )
    emit(
        dict(paths),
        as_json,
        lambda p: "\n".join(
            [
                f"CA certificate:     {p['ca_cert']}",
                f"SuperLink cert/key: {p['server_cert']}, {p['server_key']}",
            ]
            + [f"site {s}: {v['private_key']} (+ .pub)" for s, v in p["supernodes"].items()]
        ),
    )


@federate.command("superlink")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--certs",
    "certs_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory from `lumos federate certs`.",
)
@click.option("--insecure", is_flag=True, help="No TLS (loopback experiments only).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--fleet-port", type=int, default=None, help="SuperNodes connect here (9092).")
@click.option("--control-port", type=int, default=None, help="`flwr run` connects here (9093).")
@click.option("--serverappio-port", type=int, default=None, help="Local ServerAppIo (9091).")
@click.option(
    "--supernode-auth/--no-supernode-auth",
    default=None,
    help="Only registered SuperNodes may connect (on by default; --no-supernode-auth opts "
    "out, with a warning).",
)
@click.option("--database", default=None, help="SQLite file for the SuperLink state.")
@click.option("--detach", is_flag=True, help="Run in the background; print the PID.")
@json_option
def superlink(
    config: str | None,
    certs_dir: str | None,
    insecure: bool,
    host: str | None,
    fleet_port: int | None,
    control_port: int | None,
    serverappio_port: int | None,
    supernode_auth: bool | None,
    database: str | None,
    detach: bool,
    as_json: bool,
) -> None:
    """Start a Flower SuperLink (TLS and SuperNode authentication by default, the
    Control API on 127.0.0.1 only, never on port 8000)."""
    from lumos_ray.federated.deploy import security_warnings, superlink_command

    dep = _deployment(
        _load(config),
        certs_dir=certs_dir,
        host=host,
        fleet_port=fleet_port,
        control_port=control_port,
        serverappio_port=serverappio_port,
        supernode_auth=supernode_auth,
    )
    cmd = superlink_command(dep, database=database, insecure=insecure)
    for warning in security_warnings(dep, insecure=insecure):
        click.echo(f"warning: {warning}", err=True)
    _launch(
        cmd,
        "superlink",
        detach,
        as_json,
        {
            "role": "superlink",
            "fleet": f"{dep.host}:{dep.fleet_port}",
            "control": f"{dep.control_host}:{dep.control_port}",
            "tls": not insecure,
        },
    )


def _parse_partition(partition: str, num_partitions: int | None) -> tuple[int, int]:
    if "/" in partition:
        a, _, b = partition.partition("/")
        pid, n = int(a), int(b)
    else:
        pid, n = int(partition), int(num_partitions or 0)
    if n < 1 or not 0 <= pid < n:
        raise ConfigError(f"--partition {partition!r}: expected I/N with 0 <= I < N (e.g. 0/2)")
    return pid, n


@federate.command("join")
@click.option("--superlink", "superlink_addr", required=True, help="SuperLink Fleet HOST:PORT.")
@click.option("--partition", required=True, help="This site's partition, I/N (e.g. 0/2).")
@click.option("--num-partitions", type=int, default=None)
@click.option(
    "--data-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="This site's own data (.npz with arrays x, y) instead of a partition.",
)
@click.option(
    "--ca",
    "ca_cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="CA certificate that signed the SuperLink's (ca.crt).",
)
@click.option(
    "--auth-key",
    type=click.Path(dir_okay=False),
    default=None,
    help="This site's private key (SuperNode authentication).",
)
@click.option(
    "--clientappio-port",
    type=int,
    default=9094,
    show_default=True,
    help="Local port; each site on one host needs its own.",
)
@click.option("--insecure", is_flag=True)
@click.option(
    "--max-wait",
    type=float,
    default=None,
    help="Give up reconnecting to the SuperLink after this many seconds.",
)
@click.option("--detach", is_flag=True, help="Run in the background; print the PID.")
@json_option
def join(
    superlink_addr: str,
    partition: str,
    num_partitions: int | None,
    data_file: str | None,
    ca_cert: str | None,
    auth_key: str | None,
    clientappio_port: int,
    insecure: bool,
    max_wait: float | None,
    detach: bool,
    as_json: bool,
) -> None:
    """Start a SuperNode for this site's data and connect it to a SuperLink."""
    from lumos_ray.federated.deploy import supernode_command

    pid, n = _parse_partition(partition, num_partitions)
    if not auth_key and not as_json:
        click.echo(
            "warning: no --auth-key: a SuperLink with SuperNode authentication (on by "
            "default) refuses this site; pass the key from `lumos federate certs "
            "--supernode NAME`, registered with `lumos federate register-site`",
            err=True,
        )
    cmd = supernode_command(
        superlink_addr,
        partition_id=pid,
        num_partitions=n,
        clientappio_port=clientappio_port,
        data_file=data_file,
        root_certificates=ca_cert,
        auth_private_key=auth_key,
        insecure=insecure,
        max_wait_s=max_wait,
    )
    _launch(
        cmd,
        f"supernode-{pid}",
        detach,
        as_json,
        {"role": "supernode", "superlink": superlink_addr, "partition": f"{pid}/{n}"},
    )


_CONTROL_HOST_HELP = (
    "Loopback address of the SuperLink's Control API (default 127.0.0.1; it never "
    "listens elsewhere: from another machine, tunnel to it)."
)


def _flwr_home(
    cfg: Any, certs_dir: str | None, insecure: bool, host: str | None, control_port: int | None
) -> Path:
    from lumos_ray.federated import federated_home
    from lumos_ray.federated.deploy import write_flwr_home

    dep = _deployment(cfg, certs_dir=certs_dir, control_host=host, control_port=control_port)
    return write_flwr_home(federated_home() / "_flwr", dep, insecure=insecure)


@federate.command("register-site")
@click.argument("public_key", type=click.Path(dir_okay=False, exists=True))
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--certs", "certs_dir", type=click.Path(file_okay=False), default=None)
@click.option("--host", default=None, help=_CONTROL_HOST_HELP)
@click.option("--control-port", type=int, default=None)
@json_option
def register_site(
    public_key: str,
    config: str | None,
    certs_dir: str | None,
    host: str | None,
    control_port: int | None,
    as_json: bool,
) -> None:
    """Register a SuperNode's public key with the SuperLink (SuperNode authentication)."""
    from lumos_ray.federated.deploy import parse_json_output, register_supernode_command, run_flwr

    home = _flwr_home(_load(config), certs_dir, False, host, control_port)
    res = run_flwr(register_supernode_command(public_key), home, timeout=120)
    out = parse_json_output(res.stdout)
    if res.returncode != 0 or out.get("success") is False:
        raise FederationError(f"registering {public_key} failed: {res.stdout.strip()[-500:]}")
    emit(out or {"registered": public_key}, as_json, f"registered {public_key}: {out}")


@federate.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--certs", "certs_dir", type=click.Path(file_okay=False), default=None)
@click.option("--insecure", is_flag=True)
@click.option("--host", default=None, help=_CONTROL_HOST_HELP)
@click.option("--control-port", type=int, default=None)
@click.option("--run-name", default=None)
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@json_option
def run(
    config: str,
    certs_dir: str | None,
    insecure: bool,
    host: str | None,
    control_port: int | None,
    run_name: str | None,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Start a federated run on a SuperLink through Flower's own `flwr run`."""
    from lumos_ray.federated import federated_home, read_federated_run, resolve_robust_method
    from lumos_ray.federated.deploy import flwr_run_command, run_flwr, write_app_dir

    cfg = _load(config)
    _, robust_warning = resolve_robust_method(cfg, "deployment")
    if robust_warning and not as_json:
        click.echo(f"warning: {robust_warning}", err=True)
    name = run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    home = _flwr_home(cfg, certs_dir, insecure, host, control_port)
    app_dir = write_app_dir(cfg, name, federated_home() / "_apps" / name)
    echo = None if as_json else (lambda line: click.echo(line))
    res = run_flwr(flwr_run_command(app_dir), home, timeout=timeout, stream_to=echo)
    status = read_federated_run(name)  # present when the SuperLink shares this LUMOS_HOME
    failed = res.returncode != 0 or (status is not None and status.get("state") != "succeeded")
    if failed:
        reason = (status or {}).get("error") or res.stdout.strip()[-800:]
        raise FederationError(f"federated run {name} failed: {reason}", run=name)
    emit(
        status or {"run": name, "state": "submitted-and-finished"},
        as_json,
        f"run {name} finished" + (f": final {status.get('final')}" if status else ""),
    )


@federate.command("simulate")
@click.argument("config", type=click.Path(dir_okay=False))
@address_option
@click.option("--set", "sets", multiple=True, help="Override a field: key.path=JSON.")
@click.option("--run-name", default=None)
@json_option
def simulate_cmd(
    config: str, address: str | None, sets: tuple[str, ...], run_name: str | None, as_json: bool
) -> None:
    """Run N simulated sites on Ray (Flower's Ray backend), with per-round progress.

    --address http://HOST:8265 submits a Ray job to that cluster's job server; any other
    address (auto, ray://, HOST:PORT) runs the driver here, attached to that cluster;
    no address starts an embedded cluster.
    """
    from lumos_ray.federated import apply_overrides, load_federation_config, simulate

    cfg = load_federation_config(config)
    if sets:
        cfg = apply_overrides(cfg, list(sets))
    if address and address.startswith(("http://", "https://")):
        status = _submit_job(cfg, address, run_name, as_json)
    else:
        status = simulate(cfg, address=address, run_name=run_name)
    emit(
        status,
        as_json,
        lambda s: (
            f"run {s['run']}: {s['state']}, {s['rounds_done']} "
            f"round(s); initial {s.get('initial')} -> final {s.get('final')}"
        ),
    )


def _submit_job(cfg: Any, address: str, run_name: str | None, as_json: bool) -> dict:
    """Run the simulation as a Ray job (driver on the cluster) through the one job
    launcher, streaming its ``[lumos federate]`` progress lines; the summary is the
    result the job wrote."""
    from lumos_ray.runtime import JobLauncher

    name = run_name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    launcher = JobLauncher(address)
    job_id = launcher.submit(
        "lumos_ray.federated._simulate:job_main",
        {"config": cfg.model_dump(mode="json"), "run_name": name},
        kind="federated",
        name=name,
        metadata={"run": name},
    )
    if not as_json:
        click.echo(f"submitted Ray job {job_id}", err=True)

    def show(line: str) -> None:
        if line.startswith("[lumos federate]") and not as_json:
            click.echo(line)

    info = launcher.follow(job_id, on_line=show, poll_s=2.0)
    return {"job_id": job_id, **(info.result or {"run": name, "state": "succeeded"})}


@federate.command("status")
@click.argument("run_name", required=False)
@json_option
def status(run_name: str | None, as_json: bool) -> None:
    """List federated runs, or show one run's per-round metrics."""
    from lumos_ray.errors import NotFoundError
    from lumos_ray.federated import list_federated_runs, read_federated_run

    if run_name is None:
        runs = list_federated_runs()
        procs = []
        for f in sorted(_state_dir().glob("*.json")):
            info = json.loads(f.read_text())
            info["alive"] = _alive(int(info.get("pid", 0)))
            procs.append(info)
        emit(
            {"runs": runs, "processes": procs},
            as_json,
            lambda d: (
                "\n".join(
                    [
                        f"{r['run']:40s} {r['mode']:11s} {r['state']:10s} rounds={r['rounds_done']}"
                        for r in d["runs"]
                    ]
                    or ["no federated runs"]
                )
                + "".join(
                    f"\n{p['role']} pid={p['pid']} alive={p['alive']}" for p in d["processes"]
                )
            ),
        )
        return
    st = read_federated_run(run_name)
    if st is None:
        raise NotFoundError(f"no federated run {run_name!r}")
    emit(st, as_json, _run_text)


#: Characters of one store warning ``federate status`` shows (status.json has it all).
_WARNING_CHARS = 160


def _run_text(s: dict[str, Any]) -> str:
    """One run's status for people: a line per round, then the error and the run store
    warnings, if any (the dashboard reads the store: a warning says what it lacks)."""
    lines = [f"run {s['run']} ({s['mode']}): {s['state']}"]
    lines += [
        f"  round {r.get('round')}: global_loss={r.get('global_loss')}"
        f" acc={r.get('global_accuracy')}"
        f" sites={r.get('sites_replied')}/{r.get('sites_sampled')}"
        f" rejected={r.get('sites_rejected')}"
        f" bytes={(r.get('bytes_sent') or 0) + (r.get('bytes_received') or 0)}"
        for r in s.get("rounds") or []
    ]
    if s.get("error"):
        lines.append(f"  error: {s['error']}")
    warnings = [w for w in s.get("store_warnings") or [] if isinstance(w, dict)]
    if warnings:
        total = s.get("store_warnings_total") or len(warnings)
        more = f", the newest {len(warnings)} shown" if total > len(warnings) else ""
        lines.append(f"  run store warnings ({total}{more}; all in status.json):")
        for w in warnings:
            text = " ".join(str(w.get("warning", "")).split())
            if len(text) > _WARNING_CHARS:
                text = text[: _WARNING_CHARS - 3] + "..."
            lines.append(f"    {text}")
    return "\n".join(lines)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@federate.command("stop")
@click.argument("name")
@json_option
def stop(name: str, as_json: bool) -> None:
    """Stop a process started with --detach (superlink, supernode-0, ...)."""
    f = _state_dir() / f"{name}.json"
    if not f.is_file():
        from lumos_ray.errors import NotFoundError

        raise NotFoundError(f"no detached process {name!r} (see `lumos federate status`)")
    pid = int(json.loads(f.read_text())["pid"])
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)
    f.unlink()
    emit({"stopped": name, "pid": pid}, as_json, f"stopped {name} (pid {pid})")


def register(cli: click.Group) -> None:
    cli.add_command(federate)
