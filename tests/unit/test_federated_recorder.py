"""RunRecorder's store events (lumos_ray.federated._metrics): a non-finite metric, a
value the store refuses, or a store that is down costs at most that one event, never
the later rounds or ``federated.finished`` (the dashboard's federated page reads them;
without ``federated.finished`` a run shows as running forever).

Real RunRecorder on a SQLite store on disk, read back with the store and the
dashboard's own reader; no Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lumos_ray.federated._metrics import (
    MAX_STORE_WARNINGS,
    RoundRecord,
    RunRecorder,
    finite_json,
    read_federated_run,
)
from lumos_ray.serve._dashboard._federated import federated_run
from lumos_ray.store import open_store

TENANT = "acme"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path}/runs.db")
    monkeypatch.setenv("LUMOS_TENANT", TENANT)
    return tmp_path


def _round(i: int, loss: Any, **kw: Any) -> RoundRecord:
    return RoundRecord(
        round=i,
        sites_sampled=3,
        sites_replied=3,
        sites_failed=0,
        sites_rejected=0,
        bytes_sent=1000,
        bytes_received=900,
        duration_s=0.5,
        global_loss=loss,
        **kw,
    )


def _refuse(token: str) -> Any:
    raise ValueError(f"not strict JSON: {token}")


def _strict(text: str) -> Any:
    """Parse as jq and strict parsers do: NaN, Infinity and -Infinity are refused."""
    return json.loads(text, parse_constant=_refuse)


def _strict_lines(path: Path) -> list[dict[str, Any]]:
    return [_strict(line) for line in path.read_text().splitlines()]


def _events(name: str) -> list[dict[str, Any]]:
    return open_store(tenant_id=TENANT).read_events(f"federated:{name}")


def test_a_nan_loss_is_stored_as_null_and_later_rounds_and_the_finish_are_recorded(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = RunRecorder("fed-nan", config={"app": "tabular", "rounds": 4}, mode="simulation")
    rec.record(_round(1, 0.9))
    rec.record(_round(2, float("nan"), train_loss=float("inf")))
    rec.record(_round(3, 0.7))
    rec.record(_round(4, 0.6))
    rec.finish("succeeded", final={"global_loss": 0.6})

    evs = _events("fed-nan")
    assert [e["type"] for e in evs] == [
        "federated.started",
        *["federated.round"] * 4,
        "federated.finished",
    ]
    nan_round = evs[2]["data"]
    assert nan_round["round"] == 2
    assert nan_round["global_loss"] is None and nan_round["train_loss"] is None
    assert sorted(nan_round["non_finite"]) == ["global_loss", "train_loss"]
    assert "non_finite" not in evs[1]["data"] and "non_finite" not in evs[3]["data"]
    assert evs[-1]["data"] == {"state": "succeeded", "final": {"global_loss": 0.6}}

    page = federated_run(TENANT, "fed-nan")
    assert page["state"] == "succeeded"
    assert [r["global_loss"] for r in page["rounds"]] == [0.9, None, 0.7, 0.6]
    # A non-finite number is not a store failure: no warning.
    assert "WARNING" not in capsys.readouterr().out
    status = read_federated_run("fed-nan")
    assert status is not None and "store_warnings" not in status
    # The run's files follow the same rule, as strict JSON.
    lines = _strict_lines(home / "federated" / "fed-nan" / "rounds.jsonl")
    assert [r["global_loss"] for r in lines] == [0.9, None, 0.7, 0.6]
    assert sorted(lines[1]["non_finite"]) == ["global_loss", "train_loss"]
    assert lines[1]["train_loss"] is None and "non_finite" not in lines[0]


def test_non_finite_numbers_in_nested_extras_and_final_metrics_are_named_by_path(
    home: Path,
) -> None:
    rec = RunRecorder("fed-nested", config={"lr": 0.1}, mode="simulation")
    rec.record(_round(1, 0.5, extra={"grad_norm": float("inf"), "losses": [0.1, float("nan")]}))
    rec.finish("failed", final={"global_loss": float("-inf")}, error="diverged")

    evs = _events("fed-nested")
    assert evs[1]["data"]["extra"] == {"grad_norm": None, "losses": [0.1, None]}
    assert evs[1]["data"]["non_finite"] == ["extra.grad_norm", "extra.losses[1]"]
    assert evs[2]["data"] == {
        "state": "failed",
        "final": {"global_loss": None},
        "error": "diverged",
        "non_finite": ["final.global_loss"],
    }
    assert federated_run(TENANT, "fed-nested")["state"] == "failed"


def test_numpy_scalar_metrics_are_stored_as_plain_numbers(home: Path) -> None:
    rec = RunRecorder("fed-numpy", config={}, mode="simulation")
    rec.record(_round(1, np.float32(0.25), extra={"steps": np.int64(7), "n": np.float32("nan")}))
    data = _events("fed-numpy")[1]["data"]
    assert data["global_loss"] == 0.25
    assert data["extra"] == {"steps": 7, "n": None}
    assert data["non_finite"] == ["extra.n"]


def test_a_refused_round_keeps_its_numbers_with_the_reason_and_later_events_are_stored(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = RunRecorder("fed-refused", config={}, mode="simulation")
    rec.record(_round(1, 0.8))
    rec.record(_round(2, float("nan"), extra={"blob": b"\x00raw"}))  # bytes: not JSON
    rec.record(_round(3, 0.6))
    rec.finish("succeeded")

    evs = _events("fed-refused")
    assert [e["type"] for e in evs] == [
        "federated.started",
        *["federated.round"] * 3,
        "federated.finished",
    ]
    refused = evs[2]["data"]
    assert refused["round"] == 2 and refused["sites_replied"] == 3
    assert refused["global_loss"] is None and refused["non_finite"] == ["global_loss"]
    assert "extra" not in refused
    assert "not storable JSON" in refused["store_refused"]
    assert evs[3]["data"]["global_loss"] == 0.6
    assert federated_run(TENANT, "fed-refused")["state"] == "succeeded"

    out = capsys.readouterr().out
    assert "WARNING: federated.round (round 2): run store refused the event" in out
    assert "Later events are still written" in out
    status = read_federated_run("fed-refused")
    assert status is not None and status["store_warnings_total"] == 1
    assert status["store_warnings"][0]["event"] == "federated.round"


def test_a_store_that_is_down_for_one_round_loses_only_that_round(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = RunRecorder("fed-down", config={}, mode="simulation")
    rec.record(_round(1, 0.9))
    (home / "not-a-dir").write_text("")  # the store's directory cannot be created
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{home}/not-a-dir/runs.db")
    rec.record(_round(2, 0.8))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{home}/runs.db")
    rec.record(_round(3, 0.7))
    rec.finish("succeeded")

    evs = _events("fed-down")
    assert [(e["type"], (e["data"] or {}).get("round")) for e in evs] == [
        ("federated.started", None),
        ("federated.round", 1),
        ("federated.round", 3),
        ("federated.finished", None),
    ]
    out = capsys.readouterr().out
    assert "WARNING: federated.round (round 2): run store unavailable" in out
    status = read_federated_run("fed-down")
    assert status is not None
    assert [r["round"] for r in status["rounds"]] == [1, 2, 3]  # the files have it
    assert status["store_warnings_total"] == 1


def test_status_keeps_only_the_newest_store_warnings(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = RunRecorder("fed-many", config={}, mode="simulation")
    (home / "not-a-dir").write_text("")
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{home}/not-a-dir/runs.db")
    for i in range(1, MAX_STORE_WARNINGS + 6):
        rec.record(_round(i, 0.5))
    status = json.loads((home / "federated" / "fed-many" / "status.json").read_text())
    assert status["store_warnings_total"] == MAX_STORE_WARNINGS + 5
    assert len(status["store_warnings"]) == MAX_STORE_WARNINGS
    assert "(round 6)" in status["store_warnings"][0]["warning"]


def test_finite_json_leaves_finite_values_and_non_numbers_alone() -> None:
    value = {"a": 1, "b": True, "c": "nan", "d": None, "e": [1.5, {"f": -2}], "g": (1, 2)}
    clean, bad = finite_json(value)
    assert clean == {**value, "g": [1, 2]} and bad == []
    assert finite_json(float("nan")) == (None, ["value"])


def test_status_json_is_strict_json_with_non_finite_numbers_named(home: Path) -> None:
    rec = RunRecorder("fed-status", config={"lr": float("nan")}, mode="simulation")
    rec.set_initial({"global_loss": np.float32("inf")})
    rec.record(_round(1, float("nan")))
    status = _strict((home / "federated" / "fed-status" / "status.json").read_text())
    assert status["config"] == {"lr": None} and status["initial"] == {"global_loss": None}
    assert status["last_round"]["global_loss"] is None
    assert status["non_finite"] == ["config.lr", "initial.global_loss", "last_round.global_loss"]
    rec.finish("failed", final={"global_loss": float("-inf")}, error="diverged")
    status = _strict((home / "federated" / "fed-status" / "status.json").read_text())
    assert status["state"] == "failed" and status["final"] == {"global_loss": None}
    assert "final.global_loss" in status["non_finite"]


def test_a_round_nested_too_deep_still_writes_a_strict_line(home: Path) -> None:
    deep: Any = float("nan")
    for _ in range(40):  # deeper than finite_json follows
        deep = {"d": deep}
    rec = RunRecorder("fed-deep", config={}, mode="simulation")
    rec.record(_round(1, float("nan"), extra=deep))
    rec.record(_round(2, 0.5))
    (line1, line2) = _strict_lines(home / "federated" / "fed-deep" / "rounds.jsonl")
    assert line1["round"] == 1 and line1["global_loss"] is None and "extra" not in line1
    assert line1["non_finite"] == ["global_loss"] and "nested too deep" in line1["not_written"]
    assert line2["global_loss"] == 0.5


def _status_text(name: str) -> str:
    from click.testing import CliRunner

    from lumos_ray.cli import _federate
    from lumos_ray.cli._common import cli

    if "federate" not in cli.commands:
        _federate.register(cli)
    out = CliRunner().invoke(cli, ["federate", "status", name])
    assert out.exit_code == 0, out.output
    return out.output


def test_federate_status_shows_the_runs_store_warnings(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RunRecorder("fed-quiet", config={}, mode="simulation").record(_round(1, 0.9))
    assert "store warning" not in _status_text("fed-quiet")

    rec = RunRecorder("fed-warned", config={}, mode="simulation")
    (home / "not-a-dir").write_text("")
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{home}/not-a-dir/runs.db")
    for i in range(1, MAX_STORE_WARNINGS + 3):
        rec.record(_round(i, float("nan")))
    text = _status_text("fed-warned")
    header = f"run store warnings ({MAX_STORE_WARNINGS + 2}, the newest {MAX_STORE_WARNINGS}"
    assert header in text
    shown = [ln for ln in text.splitlines() if ln.startswith("    federated.round (round ")]
    assert len(shown) == MAX_STORE_WARNINGS
    assert shown[0].startswith("    federated.round (round 3): run store unavailable")
    assert all(len(ln) <= 4 + 160 for ln in shown)
    assert "round 22: global_loss=None" in text
