"""Deployment defaults that keep a federation closed: the Control API (where `flwr run`
ships code every SuperNode executes) on loopback only, SuperNode authentication on
unless explicitly opted out (with a warning). Command lines only: no processes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lumos_ray.errors import ConfigError
from lumos_ray.federated import DeploymentConfig, FederationConfig, load_federation_config


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> str:
    from lumos_ray.federated._certs import generate_certs

    return generate_certs(tmp_path_factory.mktemp("c") / "certs", hosts=["10.1.2.3"])["dir"]


def test_control_api_binds_loopback_when_the_fleet_api_binds_everywhere(certs):
    from lumos_ray.federated.deploy import superlink_command

    dep = DeploymentConfig(host="0.0.0.0", certs_dir=certs)
    cmd = superlink_command(dep)
    assert _arg(cmd, "--fleet-api-address") == f"0.0.0.0:{dep.fleet_port}"
    assert _arg(cmd, "--control-api-address") == f"127.0.0.1:{dep.control_port}"
    assert _arg(cmd, "--serverappio-api-address").startswith("127.0.0.1:")


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "superlink.example.org"])
def test_a_non_loopback_control_host_is_refused_with_the_fix(host):
    with pytest.raises(ValueError, match="SSH tunnel"):
        DeploymentConfig(control_host=host)
    for ok in ("127.0.0.1", "127.0.0.5", "::1", "localhost"):
        assert DeploymentConfig(control_host=ok).control_host == ok


def test_flwr_connects_to_the_loopback_control_api(tmp_path, certs):
    import tomllib

    from lumos_ray.federated.deploy import write_flwr_home

    dep = DeploymentConfig(host="0.0.0.0", certs_dir=certs, control_port=9193)
    home = write_flwr_home(tmp_path / "flwr", dep)
    doc = tomllib.loads((home / "config.toml").read_text())
    assert doc["superlink"]["lumos"]["address"] == "127.0.0.1:9193"


def test_certs_always_cover_loopback(certs):
    from cryptography import x509

    srv = x509.load_pem_x509_certificate((Path(certs) / "server.pem").read_bytes())
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert "10.1.2.3" in ips and "127.0.0.1" in ips
    assert "localhost" in san.get_values_for_type(x509.DNSName)


def test_supernode_auth_is_on_by_default(certs):
    from lumos_ray.federated.deploy import superlink_command

    assert DeploymentConfig().supernode_auth is True
    assert "--enable-supernode-auth" in superlink_command(DeploymentConfig(certs_dir=certs))


def test_insecure_needs_an_explicit_auth_opt_out_which_is_warned_about(caplog):
    from lumos_ray.federated.deploy import superlink_command

    with pytest.raises(ConfigError) as exc:
        superlink_command(DeploymentConfig(), insecure=True)
    assert "--no-supernode-auth" in (exc.value.fix or "")
    with caplog.at_level(logging.WARNING, logger="lumos_ray.federated"):
        cmd = superlink_command(DeploymentConfig(supernode_auth=False), insecure=True)
    assert "--insecure" in cmd and "--enable-supernode-auth" not in cmd
    assert "SuperNode authentication is off" in caplog.text


def test_shipped_deployment_config_is_authenticated_and_robust():
    from lumos_ray.federated import resolve_robust_method

    cfg = load_federation_config("configs/federated/deployment.yaml")
    assert cfg.deployment.supernode_auth and cfg.deployment.control_host == "127.0.0.1"
    assert resolve_robust_method(cfg, "deployment") == ("median", None)


def test_cli_superlink_insecure_without_opt_out_is_refused(tmp_path, monkeypatch):
    from lumos_ray.cli import _federate
    from lumos_ray.cli._common import cli

    def no_exec(*args: object) -> None:
        # Were the command accepted, the CLI would exec flower-superlink in place of
        # this test process: fail instead.
        raise AssertionError(f"superlink started: {args[1]}")

    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(os, "execvpe", no_exec)
    if "federate" not in cli.commands:
        _federate.register(cli)
    res = CliRunner().invoke(cli, ["federate", "superlink", "--insecure"])
    assert isinstance(res.exception, ConfigError), (res.output, res.exception)
    assert "needs TLS" in res.exception.message


def test_federation_config_keeps_robust_defaults_through_yaml(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("name: x\n")
    cfg = load_federation_config(path)
    assert cfg == FederationConfig(name="x")
    assert cfg.robust.method == "auto" and cfg.robust.max_weight_ratio == 3.0
