"""Fast checks of the federated subsystem: configs, data split, certs, update guard,
deployment command lines and the CLI surface. No Ray, no Flower processes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from lumos_ray.errors import ConfigError, LumosError
from lumos_ray.federated import FederationConfig, load_federation_config


def test_example_configs_load():
    from pathlib import Path

    files = sorted(Path("configs/federated").glob("*.yaml"))
    assert files
    for f in files:
        cfg = load_federation_config(f)
        assert cfg.rounds >= 1


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 0\nstrategy: {name: fedsgd}\n")
    with pytest.raises(ConfigError) as exc:
        load_federation_config(bad)
    assert "rounds" in exc.value.message and "strategy.name" in exc.value.message


@pytest.mark.parametrize(
    "data",
    [
        {"deployment": {"fleet_port": 8000}},
        {"deployment": {"control_port": 8000}},
        {"min_train_sites": 3, "min_available_sites": 2},
        {"strategy": {"name": "fedadam"}, "robust": {"method": "krum"}},
        {"privacy": {"secagg": True}, "robust": {"method": "median"}},
    ],
)
def test_invalid_combinations_rejected(data):
    with pytest.raises(ValueError):
        FederationConfig.model_validate(data)


def test_partitions_are_disjoint_deterministic_and_cover_train_split():
    from lumos_ray.federated._data import full_dataset, site_partition

    cfg = FederationConfig().data
    parts = [site_partition(cfg, i, 4) for i in range(4)]
    again = site_partition(cfg, 2, 4)
    assert np.array_equal(parts[2][0], again[0])
    n_train = len(full_dataset(cfg)[1])
    assert sum(len(p[1]) + len(p[3]) for p in parts) == n_train
    with pytest.raises(ValueError):
        site_partition(cfg, 4, 4)


def test_non_iid_partitions_skew_labels():
    from lumos_ray.federated._data import site_partition

    cfg = FederationConfig.model_validate({"data": {"iid": False, "dirichlet_alpha": 0.1}}).data
    dists = [np.bincount(site_partition(cfg, i, 4)[1], minlength=3) / 1.0 for i in range(4)]
    shares = [d.max() / max(d.sum(), 1) for d in dists if d.sum()]
    assert max(shares) > 0.6


def test_certs_ca_signs_server_cert_with_loopback_san(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    from lumos_ray.federated._certs import generate_certs

    paths = generate_certs(tmp_path / "c", supernodes=["site-a"])
    ca = x509.load_pem_x509_certificate(open(paths["ca_cert"], "rb").read())
    srv = x509.load_pem_x509_certificate(open(paths["server_cert"], "rb").read())
    ca.public_key().verify(
        srv.signature,
        srv.tbs_certificate_bytes,
        padding.PKCS1v15(),
        srv.signature_hash_algorithm,
    )
    san = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    key = load_ssh_private_key(
        open(paths["supernodes"]["site-a"]["private_key"], "rb").read(), None
    )
    assert key.curve.name == "secp384r1"
    with pytest.raises(ConfigError):
        generate_certs(tmp_path / "c")  # refuses to overwrite silently


def test_private_keys_are_never_readable_by_others_not_even_while_written(tmp_path):
    """At every file operation while the certificates are written (an audit hook sees
    each open, chmod and rename), no key file in the folder is readable by group or
    others: a key written first and chmod'ed 0600 after was 0644 in between (umask
    022), long enough for another user to open it and keep reading it."""
    import os
    import stat
    import sys

    from lumos_ray.federated._certs import generate_certs

    out = tmp_path / "c"
    exposed: list[tuple[str, str]] = []
    watching = [True]

    def hook(event: str, args: tuple) -> None:
        if not watching[0] or event not in ("open", "os.chmod", "os.rename", "os.replace"):
            return
        if not out.is_dir():
            return
        for p in out.iterdir():
            if p.suffix == ".key":
                try:
                    mode = stat.S_IMODE(os.stat(p).st_mode)
                except OSError:
                    continue
                if mode & 0o077:
                    exposed.append((p.name, oct(mode)))

    sys.addaudithook(hook)  # cannot be removed: made inert below
    old = os.umask(0o022)
    try:
        generate_certs(out, supernodes=["site-a"])
    finally:
        os.umask(old)
        watching[0] = False
    assert not exposed, exposed
    keys = sorted(p.name for p in out.iterdir() if p.suffix == ".key")
    assert keys == ["ca.key", "server.key", "supernode-site-a.key"]
    assert all(stat.S_IMODE((out / k).stat().st_mode) == 0o600 for k in keys)


def _reply(node: int, arrays: dict[str, np.ndarray], n: int = 10):
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": n, "train_loss": 1.0}),
        }
    )
    return Message(content=content, dst_node_id=node, message_type="train")


def test_update_guard_rejects_nan_and_clips_update_norm():
    from flwr.app import Array, ArrayRecord
    from flwr.serverapp.strategy import FedAvg

    from lumos_ray.federated import UpdateGuard

    glob = ArrayRecord({"w": Array(np.zeros(4, dtype=np.float32))})
    guard = UpdateGuard(FedAvg(), max_update_norm=1.0)
    guard._global = glob
    good = _reply(1, {"w": np.full(4, 0.1, dtype=np.float32)})
    huge = _reply(2, {"w": np.full(4, 1e6, dtype=np.float32)})
    nan = _reply(3, {"w": np.array([np.nan, 0, 0, 0], dtype=np.float32)})
    arrays, metrics = guard.aggregate_train(1, [good, huge, nan])
    assert len(guard.last_rejected) == 1
    assert len(guard.last_clipped) == 1
    w = arrays["w"].numpy()
    assert np.all(np.isfinite(w))
    # mean of 0.1 and the clipped update (norm 1 => 0.5 per entry)
    assert np.allclose(w, (0.1 + 0.5) / 2, atol=1e-5)
    assert metrics is not None
    assert guard.aggregate_train(2, [nan]) == (None, None)


def test_build_strategy_maps_config_to_flower_strategies():
    from flwr.serverapp.strategy import (
        DifferentialPrivacyServerSideFixedClipping,
        FedAdam,
        FedProx,
        FedTrimmedAvg,
        Krum,
    )

    from lumos_ray.federated import build_strategy

    def inner(data):
        return build_strategy(FederationConfig.model_validate(data), 4).inner

    assert isinstance(inner({"strategy": {"name": "fedprox"}}), FedProx)
    assert isinstance(inner({"strategy": {"name": "fedadam"}}), FedAdam)
    assert isinstance(inner({"robust": {"method": "krum"}}), Krum)
    assert isinstance(inner({"robust": {"method": "trimmed_mean"}}), FedTrimmedAvg)
    dp = inner({"privacy": {"dp": "central", "noise_multiplier": 0.5}})
    assert isinstance(dp, DifferentialPrivacyServerSideFixedClipping)


def test_deployment_commands_use_tls_and_never_port_8000(tmp_path):
    from lumos_ray.federated._certs import generate_certs
    from lumos_ray.federated.deploy import superlink_command, supernode_command, write_app_dir

    paths = generate_certs(tmp_path / "c")
    cfg = FederationConfig.model_validate({"deployment": {"certs_dir": paths["dir"]}})
    cmd = superlink_command(cfg.deployment)
    assert "--disable-runtime-dependency-installation" in cmd
    assert "--insecure" not in cmd and "--ssl-certfile" in cmd
    assert not any(":8000" in c for c in cmd)
    node = supernode_command(
        "127.0.0.1:9092",
        partition_id=1,
        num_partitions=2,
        clientappio_port=9095,
        root_certificates=paths["ca_cert"],
    )
    assert "--root-certificates" in node and "127.0.0.1:9095" in node
    assert "--allow-runtime-dependency-installation" not in node
    with pytest.raises(ConfigError):
        superlink_command(FederationConfig().deployment)  # no certs and not --insecure
    with pytest.raises(ConfigError):
        supernode_command(
            "h:1", partition_id=0, num_partitions=1, clientappio_port=8000, insecure=True
        )
    app = write_app_dir(cfg, "r1", tmp_path / "app")
    import tomllib

    doc = tomllib.loads((app / "pyproject.toml").read_text())
    run_cfg = doc["tool"]["flwr"]["app"]["config"]
    assert FederationConfig.model_validate_json(run_cfg["lumos-config"]) == cfg


def test_cli_federate_commands_and_errors(tmp_path, monkeypatch):
    from lumos_ray.cli import _federate
    from lumos_ray.cli._common import cli

    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    if "federate" not in cli.commands:
        _federate.register(cli)
    runner = CliRunner()
    out = runner.invoke(cli, ["federate", "certs", "--out", str(tmp_path / "c"), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["ca_cert"].endswith("ca.crt")
    out = runner.invoke(cli, ["federate", "status", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["runs"] == []
    res = runner.invoke(cli, ["federate", "superlink", "--insecure", "--fleet-port", "8000"])
    assert isinstance(res.exception, LumosError) and "8000" in res.exception.message
    res = runner.invoke(
        cli,
        ["federate", "join", "--superlink", "127.0.0.1:9092", "--partition", "3/2", "--insecure"],
    )
    assert isinstance(res.exception, ConfigError)


def test_privacy_report_and_round_progress_line():
    from lumos_ray.federated._metrics import RoundRecord, _progress_line
    from lumos_ray.federated._server import _privacy_report

    cfg = FederationConfig.model_validate({"rounds": 4, "privacy": {"dp": "local", "epsilon": 2.0}})
    rep = _privacy_report(cfg)
    assert math.isclose(rep["epsilon_total_basic_composition"], 8.0)
    line = _progress_line(
        RoundRecord(
            round=2,
            sites_sampled=4,
            sites_replied=3,
            sites_failed=1,
            sites_rejected=0,
            bytes_sent=10,
            bytes_received=20,
            duration_s=0.5,
            global_loss=0.25,
        )
    )
    assert "round 2" in line and "sites=3/4" in line and "bytes=30" in line


def test_recorder_writes_files_and_run_store_events(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path}/runs.db")
    from lumos_ray.federated import read_federated_run
    from lumos_ray.federated._metrics import RoundRecord, RunRecorder
    from lumos_ray.store._sql import RunStore

    rec = RunRecorder("unit-run", config={"rounds": 1}, mode="simulation")
    rec.set_initial({"loss": 2.0})
    rec.record(
        RoundRecord(
            round=1,
            sites_sampled=2,
            sites_replied=2,
            sites_failed=0,
            sites_rejected=0,
            bytes_sent=8,
            bytes_received=8,
            duration_s=0.1,
            global_loss=1.0,
        )
    )
    rec.finish("succeeded", final={"loss": 1.0})
    st = read_federated_run("unit-run")
    assert st["state"] == "succeeded" and st["rounds"][0]["global_loss"] == 1.0
    events = RunStore(f"sqlite:///{tmp_path}/runs.db").read_events("federated:unit-run")
    assert [e["type"] for e in events] == [
        "federated.started",
        "federated.round",
        "federated.finished",
    ]
    assert events[1]["data"]["bytes_sent"] == 8


def _call_client(cfg: FederationConfig, arrays, message_type: str = "train"):
    """One real ClientApp call in-process (what a SuperNode/Ray actor does per message)."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from lumos_ray.federated import build_client_app

    content = RecordDict(
        {
            "arrays": arrays,
            "config": ConfigRecord(
                {"lumos-config": cfg.model_dump_json(), "server-round": 1, "local-epochs": 1}
            ),
        }
    )
    msg = Message(content=content, dst_node_id=7, message_type=message_type)
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=RecordDict(),
        run_config={},
    )
    return build_client_app()(msg, ctx)


def test_client_app_trains_and_local_dp_clips_the_update():
    from lumos_ray.federated._apps import get_app_spec

    plain = FederationConfig.model_validate({"learning_rate": 0.5})
    arrays = get_app_spec("tabular").initial_arrays(plain)
    sent = arrays.to_numpy_ndarrays()

    def update_norm(reply) -> float:
        got = reply.content["arrays"].to_numpy_ndarrays()
        return float(np.sqrt(sum(((g - s) ** 2).sum() for g, s in zip(got, sent, strict=True))))

    reply = _call_client(plain, arrays)
    assert not reply.has_error() and reply.content["metrics"]["num-examples"] > 0
    assert update_norm(reply) > 0.05
    dp = plain.model_copy(
        update={
            "privacy": plain.privacy.model_copy(
                update={"dp": "local", "clipping_norm": 0.01, "epsilon": 1e6, "delta": 1e-5}
            )
        }
    )
    # Flower's LocalDpMod: update clipped to 0.01, plus (here negligible) Gaussian noise.
    assert update_norm(_call_client(dp, arrays)) < 0.0101
    ev = _call_client(plain, arrays, message_type="evaluate")
    assert 0.0 <= ev.content["metrics"]["eval_accuracy"] <= 1.0
