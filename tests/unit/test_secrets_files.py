"""State lumos writes to disk: no plaintext secrets, files 0600, directories 0700.

Every test runs under umask 022 (the usual default), under which plain ``open``/
``mkdir`` make world-readable files: the modes checked here come from lumos, not from
a strict umask on the test machine.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray._files import open_private_append, private_dir, write_private_text
from lumos_ray.runtime._jobs import FileResultStore, write_result_file
from lumos_ray.serve._config import load_serve_config
from lumos_ray.serve._state import read_serve_state, write_serve_state
from lumos_ray.store import RunStore

YAML_KEY = "sk-from-the-yaml-0123456789"
HF_TOKEN = "hf_secret_token_abcdef"
S3_PASSWORD = "s3-password-xyz"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_serve_state_file_holds_references_not_the_keys_from_the_yaml(tmp_path: Path) -> None:
    cfg_path = tmp_path / "serve.yaml"
    cfg_path.write_text(
        f"""
gateway:
  api_keys: ["{YAML_KEY}", {{key: "{YAML_KEY}-acme", tenant: acme, role: viewer}}]
  api_keys_env: MY_GATEWAY_KEYS
  platform_store_url: "postgresql+psycopg://lumos:{S3_PASSWORD}@db:5432/runs"
models:
  - name: m
    env: {{HF_TOKEN: {HF_TOKEN}}}
    lora: {{object_store_path: "s3://user:{S3_PASSWORD}@bucket/adapters"}}
"""
    )
    cfg = load_serve_config(cfg_path)  # what `lumos serve up CONFIG` loads
    home = tmp_path / "home"
    state = home / "serve.json"
    write_serve_state(state, "http://127.0.0.1:8000/v1", cfg)  # what serve.start() writes

    text = state.read_text()
    for secret in (YAML_KEY, HF_TOKEN, S3_PASSWORD):
        assert secret not in text
    data = json.loads(text)
    gateway = data["config"]["gateway"]
    assert gateway["api_keys"][0] == "<redacted>"  # how many, not what
    assert gateway["api_keys"][1]["key"] == "<redacted>"
    assert gateway["api_keys"][1]["tenant"] == "acme"  # scope stays, the secret goes
    assert gateway["platform_store_url"] == "postgresql+psycopg://lumos:***@db:5432/runs"
    assert gateway["api_keys_env"] == "MY_GATEWAY_KEYS"  # the reference stays
    assert data["config"]["models"][0]["env"] == {"HF_TOKEN": "<redacted>"}
    assert data["config"]["models"][0]["lora"]["object_store_path"].startswith("s3://user:***@")
    assert read_serve_state(state)["url"] == "http://127.0.0.1:8000/v1"
    assert _mode(state) == 0o600 and _mode(home) == 0o700
    assert [p.name for p in home.iterdir()] == ["serve.json"]  # no temp file left behind


def test_sqlite_store_file_and_its_wal_are_0600_in_new_0700_dirs(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    db = shared / "lumos" / "state" / "runs.db"
    store = RunStore(f"sqlite:///{db}")
    try:
        store.create_run("r1", "wf", "v1", {"prompt": "private"})
        # while open: SQLite's -wal and -shm exist (the last close removes them)
        modes = {p.name: _mode(p) for p in db.parent.iterdir()}
    finally:
        store.close()
    assert {"runs.db", "runs.db-wal", "runs.db-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
    assert _mode(db.parent) == 0o700 and _mode(db.parent.parent) == 0o700
    assert _mode(shared) == 0o755  # a directory lumos did not create keeps its mode


def test_the_default_store_tightens_lumos_home_it_lives_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # e.g. made by another command before any store opened
    monkeypatch.setenv("LUMOS_HOME", str(home))
    RunStore(f"sqlite:///{home / 'runs.db'}").close()
    assert _mode(home) == 0o700 and _mode(home / "runs.db") == 0o600


def test_an_existing_world_readable_store_file_is_tightened_on_open(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    RunStore(f"sqlite:///{db}").close()
    os.chmod(db, 0o644)
    RunStore(f"sqlite:///{db}").close()
    assert _mode(db) == 0o600


def test_job_result_file_and_lumos_results_dir_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("LUMOS_HOME", str(home))
    monkeypatch.delenv("LUMOS_JOB_RESULTS_DIR", raising=False)
    results = FileResultStore()
    where = Path(results.location("job-1"))
    write_result_file(str(where), {"ok": True, "result": {"answer": 42}})
    assert results.read("job-1") == {"ok": True, "result": {"answer": 42}}
    assert _mode(where) == 0o600
    assert _mode(where.parent) == 0o700 and _mode(where.parent.parent) == 0o700
    assert [p.name for p in where.parent.iterdir()] == ["job-1.json"]


def test_a_results_dir_the_user_chose_keeps_its_mode_but_files_are_0600(tmp_path: Path) -> None:
    chosen = tmp_path / "nfs-results"
    chosen.mkdir(mode=0o755)
    where = Path(FileResultStore(chosen).location("job-2"))
    write_result_file(str(where), {"ok": True, "result": None})
    assert _mode(chosen) == 0o755 and _mode(where) == 0o600


def test_lumos_home_is_tightened_and_logs_are_0600(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    private_dir(home)  # what runtime.connect() and `lumos serve up --detach` call
    assert _mode(home) == 0o700
    log = home / "serve.log"
    log.write_text("old line\n")
    os.chmod(log, 0o644)  # a log written by an older release
    with open_private_append(log) as f:  # how `lumos serve up --detach` opens its log
        f.write(b"new line\n")
    assert _mode(log) == 0o600 and log.read_text() == "old line\nnew line\n"
    pid = write_private_text(home / "serve.pid", "123")  # the daemon's pid file
    assert _mode(pid) == 0o600


def test_tightening_drops_bits_and_never_adds_any(tmp_path: Path) -> None:
    strict = tmp_path / "strict"
    strict.mkdir(mode=0o500)
    try:
        private_dir(strict)
        assert _mode(strict) == 0o500
    finally:
        os.chmod(strict, 0o700)


def test_jsonl_trace_files_are_0600_in_a_new_0700_folder(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from lumos_ray.tracing import JsonlSpanExporter

    folder = tmp_path / "spans"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(folder)))
    with provider.get_tracer("t").start_as_current_span("tool.call") as span:
        span.set_attribute("prompt", "private")
    provider.shutdown()
    (written,) = folder.iterdir()
    assert json.loads(written.read_text())["attributes"] == {"prompt": "private"}
    assert _mode(written) == 0o600 and _mode(folder) == 0o700
