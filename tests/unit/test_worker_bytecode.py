"""The bytecode cache a cluster started here gives its workers (runtime._worker_bytecode).

Without it, with ``PYTHONDONTWRITEBYTECODE`` set, every new actor process compiles Ray,
numpy, pydantic and lumos from source (issue 17: a dedicated agent's start)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lumos_ray.runtime._worker_bytecode import PYCACHE_ENV, worker_bytecode_env


def test_with_bytecode_writing_off_workers_cache_under_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv(PYCACHE_ENV, raising=False)
    env = worker_bytecode_env(tmp_path / "home")
    prefix = tmp_path / "home" / "pycache"
    assert env == {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(prefix.resolve())}
    assert prefix.is_dir()
    assert stat.S_IMODE(prefix.stat().st_mode) == 0o700


def test_with_bytecode_writing_on_the_environment_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.delenv(PYCACHE_ENV, raising=False)
    assert worker_bytecode_env(tmp_path) == {}
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "")  # empty: Python writes bytecode
    assert worker_bytecode_env(tmp_path) == {}
    assert not (tmp_path / "pycache").exists()


@pytest.mark.parametrize("off", ["off", "0", "none", "OFF"])
def test_off_keeps_the_environment_as_it_is(
    off: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv(PYCACHE_ENV, off)
    assert worker_bytecode_env(tmp_path) == {}
    assert not (tmp_path / "pycache").exists()


def test_an_explicit_folder_is_used_even_when_python_writes_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setenv(PYCACHE_ENV, str(tmp_path / "cache"))
    env = worker_bytecode_env(tmp_path / "home")
    assert env["PYTHONPYCACHEPREFIX"] == str((tmp_path / "cache").resolve())
    assert (tmp_path / "cache").is_dir()


def test_a_folder_that_cannot_be_made_means_no_cache_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv(PYCACHE_ENV, str(blocker / "cache"))
    assert worker_bytecode_env(tmp_path) == {}
