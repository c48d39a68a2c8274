"""Across sites: Flower's own SuperLink / SuperNode processes and ``flwr run``.

lumos only builds the command lines (ports never defaulting to Serve's 8000, TLS from
``lumos federate certs``, runtime dependency installation off so nothing runs ``uv
sync``), writes the Flower app directory whose run config carries the
FederationConfig, and points ``flwr`` at the SuperLink through a private FLWR_HOME.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from lumos_ray.errors import ConfigError, FederationError
from lumos_ray.federated._config import DeploymentConfig, FederationConfig, is_loopback

__all__ = [
    "FLWR_CONNECTION",
    "flwr_env",
    "flwr_run_command",
    "parse_json_output",
    "process_env",
    "register_supernode_command",
    "run_flwr",
    "security_warnings",
    "superlink_command",
    "supernode_command",
    "write_app_dir",
    "write_flwr_home",
]

_log = logging.getLogger("lumos_ray.federated")

#: Name of the SuperLink connection lumos writes into its FLWR_HOME config.toml.
FLWR_CONNECTION = "lumos"


def _bin(name: str) -> str:
    """A Flower console script next to this interpreter (the venv), else from PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise FederationError(f"{name} not found; install lumos-ray[federated] (flwr)")
    return found


def _certs(certs_dir: str | None) -> dict[str, Path] | None:
    if not certs_dir:
        return None
    d = Path(certs_dir).expanduser().resolve()
    paths = {"ca": d / "ca.crt", "cert": d / "server.pem", "key": d / "server.key"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(
            f"certificates missing: {missing}",
            fix="Create them with `lumos federate certs --out DIR`, or pass --insecure.",
        )
    return paths


def security_warnings(dep: DeploymentConfig, *, insecure: bool = False) -> list[str]:
    """What a SuperLink started with ``dep`` leaves open, one sentence each (logged by
    :func:`superlink_command`, printed by the CLI)."""
    out = []
    if insecure:
        out.append("TLS is off (--insecure): updates and code travel in the clear")
    if not dep.supernode_auth:
        out.append(
            "SuperNode authentication is off (supernode_auth: false): any process that "
            f"reaches {dep.host}:{dep.fleet_port} can join as a site and send updates"
        )
    return out


def superlink_command(
    dep: DeploymentConfig, *, database: str | None = None, insecure: bool = False
) -> list[str]:
    """``flower-superlink`` on the configured ports, TLS unless ``insecure``.

    The Control API (``flwr run`` ships code every SuperNode executes; no
    authentication in open-source Flower) always binds on ``dep.control_host``, a
    loopback address, wherever the Fleet API listens. SuperNode authentication is on
    unless ``dep.supernode_auth`` is false, which is logged as a warning."""
    if not is_loopback(dep.control_host):  # also when built without validation
        raise ConfigError(
            f"control_host {dep.control_host!r} is not a loopback address",
            fix="The Control API has no authentication: keep deployment.control_host at "
            "127.0.0.1 and reach it through an SSH tunnel.",
        )
    if not insecure and not dep.certs_dir:
        raise ConfigError(
            "the SuperLink needs TLS certificates (deployment.certs_dir / --certs)",
            fix="Run `lumos federate certs --out DIR` and pass --certs DIR, or --insecure "
            "--no-supernode-auth for a loopback-only experiment.",
        )
    if insecure and dep.supernode_auth:
        raise ConfigError(
            "SuperNode authentication (on by default) needs TLS, which --insecure turns off",
            fix="Use --certs DIR (from `lumos federate certs`), or for a loopback-only "
            "experiment opt out explicitly: --insecure --no-supernode-auth "
            "(deployment.supernode_auth: false).",
        )
    for warning in security_warnings(dep, insecure=insecure):
        _log.warning("lumos federate superlink: %s", warning)
    cmd = [
        _bin("flower-superlink"),
        "--disable-runtime-dependency-installation",
        "--fleet-api-address",
        f"{dep.host}:{dep.fleet_port}",
        "--control-api-address",
        f"{dep.control_host}:{dep.control_port}",
        "--serverappio-api-address",
        f"127.0.0.1:{dep.serverappio_port}",
    ]
    if database:
        cmd += ["--database", database]
    if insecure:
        return [*cmd, "--insecure"]
    c = _certs(dep.certs_dir)
    assert c is not None
    cmd += [
        "--ssl-ca-certfile",
        str(c["ca"]),
        "--ssl-certfile",
        str(c["cert"]),
        "--ssl-keyfile",
        str(c["key"]),
    ]
    if dep.supernode_auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def supernode_command(
    superlink: str,
    *,
    partition_id: int,
    num_partitions: int,
    clientappio_port: int,
    data_file: str | None = None,
    root_certificates: str | None = None,
    auth_private_key: str | None = None,
    insecure: bool = False,
    max_wait_s: float | None = None,
) -> list[str]:
    """``flower-supernode`` for one site. Each site on a host needs its own
    ``clientappio_port`` (Flower's default 9094 would collide)."""
    if clientappio_port == 8000:
        raise ConfigError("port 8000 is Ray Serve's; pick another --clientappio-port")
    node_cfg = f"partition-id={partition_id} num-partitions={num_partitions}"
    if data_file:
        node_cfg += f' data-file="{Path(data_file).expanduser().resolve()}"'
    cmd = [
        _bin("flower-supernode"),
        "--superlink",
        superlink,
        "--clientappio-api-address",
        f"127.0.0.1:{clientappio_port}",
        "--node-config",
        node_cfg,
    ]
    if max_wait_s:
        cmd += ["--max-wait-time", str(max_wait_s)]
    if insecure:
        return [*cmd, "--insecure"]
    if not root_certificates:
        raise ConfigError(
            "the SuperNode needs the CA certificate that signed the SuperLink's (--ca)",
            fix="Pass --ca DIR/ca.crt from `lumos federate certs`, or --insecure.",
        )
    cmd += ["--root-certificates", str(Path(root_certificates).expanduser().resolve())]
    if auth_private_key:
        cmd += ["--auth-supernode-private-key", str(Path(auth_private_key).expanduser())]
    return cmd


def write_flwr_home(
    flwr_home: str | Path, dep: DeploymentConfig, *, insecure: bool = False
) -> Path:
    """A private FLWR_HOME whose config.toml names the SuperLink ``lumos``."""
    import tomli_w

    home = Path(flwr_home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    # The Control API binds on loopback only (see superlink_command).
    conn: dict[str, Any] = {"address": f"{dep.control_host}:{dep.control_port}"}
    if insecure:
        conn["insecure"] = True
    else:
        c = _certs(dep.certs_dir)
        if c is None:
            raise ConfigError("deployment.certs_dir is required unless --insecure")
        conn["root-certificates"] = str(c["ca"])
    doc = {"superlink": {"default": FLWR_CONNECTION, FLWR_CONNECTION: conn}}
    (home / "config.toml").write_text(tomli_w.dumps(doc))
    return home


def process_env(flwr_home: str | Path | None = None) -> dict[str, str]:
    """Environment for Flower processes: the venv's bin first on PATH (the SuperLink
    and SuperNodes spawn ``flower-superexec``/``flwr-serverapp`` by name) and, for the
    ``flwr`` CLI, lumos's FLWR_HOME."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    if flwr_home is not None:
        env["FLWR_HOME"] = str(Path(flwr_home).expanduser().resolve())
    return env


def flwr_env(flwr_home: str | Path) -> dict[str, str]:
    return process_env(flwr_home)


def write_app_dir(cfg: FederationConfig, run_name: str, dest: str | Path) -> Path:
    """The Flower app ``flwr run`` ships (a FAB): just pyproject.toml, pointing at the
    installed ``lumos_ray.federated.app`` and carrying the config in the run config."""
    import tomli_w

    from lumos_ray.federated._server import CONFIG_KEY, RUN_NAME_KEY

    d = Path(dest).expanduser().resolve()
    d.mkdir(parents=True, exist_ok=True)
    doc = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "lumos-federated-app",
            "version": "1.0.0",
            "description": "lumos_ray federated app (config in run config)",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "lumos",
                    "components": {
                        "serverapp": "lumos_ray.federated.app:server_app",
                        "clientapp": "lumos_ray.federated.app:client_app",
                    },
                    "config": {CONFIG_KEY: cfg.model_dump_json(), RUN_NAME_KEY: run_name},
                }
            }
        },
    }
    (d / "pyproject.toml").write_text(tomli_w.dumps(doc))
    return d


def flwr_run_command(app_dir: str | Path, *, stream: bool = True) -> list[str]:
    cmd = [_bin("flwr"), "run", str(app_dir), FLWR_CONNECTION, "--format", "json"]
    if stream:
        cmd = [_bin("flwr"), "run", str(app_dir), FLWR_CONNECTION, "--stream"]
    return cmd


def register_supernode_command(public_key: str | Path) -> list[str]:
    return [
        _bin("flwr"),
        "supernode",
        "register",
        str(public_key),
        FLWR_CONNECTION,
        "--format",
        "json",
    ]


def run_flwr(
    cmd: list[str], flwr_home: str | Path, *, timeout: float | None = None, stream_to: Any = None
) -> subprocess.CompletedProcess[str]:
    """Run a ``flwr`` command against lumos's FLWR_HOME, output captured (and echoed)."""
    proc = subprocess.Popen(
        cmd,
        env=flwr_env(flwr_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            if stream_to is not None:
                stream_to(line.rstrip("\n"))
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise FederationError(f"`{' '.join(cmd[:3])}` did not finish in {timeout}s") from None
    return subprocess.CompletedProcess(cmd, rc, "".join(lines), "")


def parse_json_output(text: str) -> dict[str, Any]:
    """The JSON object ``flwr ... --format json`` prints (last {...} block)."""
    start = text.find("{")
    if start < 0:
        return {}
    try:
        return json.loads(text[start:])
    except json.JSONDecodeError:
        return {}
