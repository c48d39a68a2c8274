"""Real Flower processes on 127.0.0.1: one SuperLink and two SuperNodes, TLS with
certificates from `lumos federate certs`, SuperNode authentication with registered
keys, runs started through `lumos federate run` (Flower's own `flwr run`).

Every process is started by this module's fixture in its own session and stopped by
its PID (process group: the SuperLink/SuperNodes spawn flwr-serverapp/flwr-clientapp
children). Each ClientApp call starts a subprocess that imports torch, so rounds are
slow on 2 cores: the runs are short (2 rounds, no client-side evaluation).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

LUMOS = [sys.executable, "-m", "lumos_ray"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for_log(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


class Federation:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.env = {
            **os.environ,
            "LUMOS_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            # where the SuperLink/SuperNodes install the app (FAB): not the user's ~/.flwr
            "FLWR_HOME": str(root / "flwr-home"),
        }
        self.fleet, self.control, self.appio = _free_port(), _free_port(), _free_port()
        self.certs = root / "certs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*LUMOS, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        proc = subprocess.Popen(
            [*LUMOS, *args],
            env=self.env,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name], self.logs[name] = proc, log
        return proc

    def config(self, name: str, **over) -> Path:
        data = {
            "name": name,
            "app": "tabular",
            "rounds": 2,
            "fraction_evaluate": 0.0,
            "learning_rate": 0.05,
            "min_available_sites": 2,
            "min_train_sites": 2,
            "round_timeout_s": 120,
            "wait_for_sites_s": 60,
            "data": {"noise": 3.0},
            "deployment": {
                "certs_dir": str(self.certs),
                "fleet_port": self.fleet,
                "control_port": self.control,
                "serverappio_port": self.appio,
            },
            **over,
        }
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        return path


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    fed = Federation(tmp_path_factory.mktemp("federation"))
    out = fed.cli(
        "federate",
        "certs",
        "--out",
        str(fed.certs),
        "--supernode",
        "site0",
        "--supernode",
        "site1",
        "--json",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    keys = json.loads(out.stdout)["supernodes"]
    base = fed.config("base")
    try:
        fed.start("superlink", "federate", "superlink", str(base), "--supernode-auth")
        assert _wait_for_log(fed.logs["superlink"], "Starting Fleet API", 90), fed.logs[
            "superlink"
        ].read_text()
        for site in ("site0", "site1"):
            reg = fed.cli(
                "federate", "register-site", keys[site]["public_key"], str(base), "--json"
            )
            assert reg.returncode == 0, reg.stdout + reg.stderr
        for i, site in enumerate(("site0", "site1")):
            fed.start(
                f"supernode{i}",
                "federate",
                "join",
                "--superlink",
                f"127.0.0.1:{fed.fleet}",
                "--partition",
                f"{i}/2",
                "--ca",
                str(fed.certs / "ca.crt"),
                "--auth-key",
                keys[site]["private_key"],
                "--clientappio-port",
                str(_free_port()),
            )
        yield fed
    finally:
        for proc in reversed(list(fed.procs.values())):
            _stop(proc)


def _run_status(fed: Federation, run: str) -> dict | None:
    path = fed.home / "federated" / run / "status.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_superlink_and_two_supernodes_with_tls_complete_a_run(federation):
    fed = federation
    cfg = fed.config("tls-run", rounds=1)
    out = fed.cli(
        "federate",
        "run",
        str(cfg),
        "--run-name",
        "tls-run",
        "--json",
        "--timeout",
        "500",
        timeout=560,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    status = json.loads(out.stdout)
    assert status["state"] == "succeeded" and status["mode"] == "deployment"
    rounds = status["rounds"]
    assert [r["round"] for r in rounds] == [1]
    assert rounds[0]["sites_replied"] == 2 and rounds[0]["bytes_received"] > 0
    assert rounds[-1]["global_loss"] < status["initial"]["loss"]
    # Robust aggregation without asking for it: robust.method auto is Flower's
    # FedMedian in a deployment.
    assert status["result"]["robust_method"] == "median"
    # The SuperLink ran with TLS (the SuperNodes and `flwr run` verified it with
    # ca.crt) and with SuperNode authentication on (Flower warns when it is off).
    sl_log = fed.logs["superlink"].read_text(errors="replace")
    assert "SuperNode authentication is disabled" not in sl_log
    assert "--ssl-certfile" in sl_log  # the exec'd command line, echoed by lumos


def test_supernode_killed_mid_round_run_finishes_with_remaining_site(federation):
    fed = federation
    # min 1 site: the run must finish with the survivor. The SuperLink answers for a
    # vanished node after 2 missed heartbeats (~60 s, NODE_UNAVAILABLE); the round
    # timeout is only the upper bound, generous because each ClientApp call starts a
    # process that imports torch (slow on a busy 2-core machine).
    cfg = fed.config(
        "kill-run",
        min_available_sites=1,
        min_train_sites=1,
        round_timeout_s=240,
        wait_for_sites_s=30,
    )
    victim_log = fed.logs["supernode1"]
    seen_before = victim_log.read_text(errors="replace").count("Receiving: train message")
    run = subprocess.Popen(
        [
            *LUMOS,
            "federate",
            "run",
            str(cfg),
            "--run-name",
            "kill-run",
            "--json",
            "--timeout",
            "500",
        ],
        env=fed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = victim_log.read_text(errors="replace")
            if text.count("Receiving: train message") > seen_before:
                break
            time.sleep(0.3)
        else:
            pytest.fail("site 1 never received a train message")
        # SIGKILL: the site vanishes without deactivating itself at the SuperLink.
        os.killpg(fed.procs["supernode1"].pid, signal.SIGKILL)
        fed.procs["supernode1"].wait(timeout=30)
        stdout, stderr = run.communicate(timeout=540)  # never hangs
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    status = _run_status(fed, "kill-run")
    assert status is not None, stdout + stderr
    assert run.returncode == 0, (status.get("error"), stdout[-2000:], stderr[-2000:])
    assert status["state"] == "succeeded"
    rounds = json.loads(stdout)["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["sites_sampled"] == 2 and rounds[0]["sites_failed"] == 1
    assert all(r["sites_replied"] == 1 for r in rounds)


def test_too_few_sites_fails_with_a_clear_message_instead_of_hanging(federation):
    fed = federation  # one SuperNode is left (the other was killed above)
    cfg = fed.config("short-run", min_available_sites=2, min_train_sites=2, wait_for_sites_s=5)
    out = fed.cli(
        "federate",
        "run",
        str(cfg),
        "--run-name",
        "short-run",
        "--json",
        "--timeout",
        "300",
        timeout=360,
    )
    assert out.returncode != 0
    err = json.loads(out.stdout)["error"]
    assert err["code"] == "LUMOS-E060"
    assert "min_available_sites is 2" in err["message"], err


def _listeners(port: int) -> set[str]:
    """Addresses with a socket listening on ``port`` (from /proc/net/tcp, tcp6)."""
    found: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            if v6:  # four little-endian 32-bit words
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                v6addr = ipaddress.IPv6Address(raw)
                # gRPC listens on IPv4 addresses through IPv4-mapped IPv6 sockets.
                found.add(str(v6addr.ipv4_mapped or v6addr))
            else:
                found.add(str(ipaddress.IPv4Address(raw[::-1])))
    return found


def test_control_api_listens_on_loopback_only_when_the_fleet_api_listens_everywhere(
    tmp_path,
):
    """A real SuperLink started by `lumos federate superlink` with host 0.0.0.0: SuperNodes
    can reach the Fleet API from anywhere, the Control API (where `flwr run` ships code
    that every SuperNode runs; unauthenticated in open-source Flower) only from here."""
    fed = Federation(tmp_path)
    out = fed.cli("federate", "certs", "--out", str(fed.certs), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    cfg = fed.config("public")
    data = yaml.safe_load(cfg.read_text())
    data["deployment"]["host"] = "0.0.0.0"
    cfg.write_text(yaml.safe_dump(data))
    try:
        fed.start("superlink", "federate", "superlink", str(cfg))
        log = fed.logs["superlink"]
        assert _wait_for_log(log, "Starting Fleet API", 90), log.read_text()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _listeners(fed.control):
            time.sleep(0.5)
        # gRPC binds "0.0.0.0" as the dual-stack wildcard "::".
        assert _listeners(fed.fleet) & {"0.0.0.0", "::"}, log.read_text()
        assert _listeners(fed.control) == {"127.0.0.1"}, log.read_text()
        text = log.read_text(errors="replace")
        # SuperNode authentication is on without asking for it (Flower warns when off).
        assert "--enable-supernode-auth" in text
        assert "SuperNode authentication is disabled" not in text
    finally:
        for proc in fed.procs.values():
            _stop(proc)
