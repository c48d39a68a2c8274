"""`lumos serve adapters ...`, `serve status/down` without a server: no Ray, no engine."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from lumos_ray.cli import _load_commands, cli


@pytest.fixture(scope="module", autouse=True)
def _commands() -> None:
    _load_commands()


def _adapter(tmp_path: Path) -> Path:
    # The registry only needs peft's adapter layout (importing peft costs seconds).
    d = tmp_path / "ad"
    d.mkdir()
    (d / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]})
    )
    (d / "adapter_model.safetensors").write_bytes(b"w")
    return d


def test_adapters_add_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    r = runner.invoke(cli, ["serve", "adapters", "list", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == []
    r = runner.invoke(
        cli, ["serve", "adapters", "add", "sql-v1", str(_adapter(tmp_path)), "--json"]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["name"] == "sql-v1" and rec["base_model"] == "lumos-tiny"
    assert (tmp_path / "home" / "adapters" / "sql-v1" / "adapter" / "adapter_config.json").is_file()
    r = runner.invoke(cli, ["serve", "adapters", "list"])
    assert r.exit_code == 0 and "sql-v1" in r.output


def test_status_and_down_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = CliRunner()
    r = runner.invoke(cli, ["serve", "status", "--url", f"http://127.0.0.1:{port}/v1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["ready"] is False and "not reachable" in out["error"]
    r = runner.invoke(cli, ["serve", "down", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["stopped"] is False


def test_up_rejects_an_invalid_config_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {port: -1}\n")
    r = CliRunner().invoke(cli, ["serve", "up", str(bad)])
    assert r.exit_code != 0
    assert "gateway.port" in str(r.exception) or "gateway.port" in r.output
