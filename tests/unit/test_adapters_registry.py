"""The adapter registry: register/get/list/remove, validation, atomic overwrite."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from lumos_ray.adapters import AdapterRecord, AdapterRegistry
from lumos_ray.errors import AdapterError


def _adapter_dir(tmp_path: Path, name: str = "src", r: int = 4) -> Path:
    # peft's on-disk layout (importing peft itself costs seconds in a unit test).
    d = tmp_path / name
    d.mkdir()
    (d / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 8,
                    "target_modules": ["q_proj", "v_proj"]})
    )
    (d / "adapter_model.safetensors").write_bytes(b"weights-" + str(r).encode())
    return d


def test_register_get_list_remove(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    assert reg.list() == []
    rec = reg.register("sql-v1", _adapter_dir(tmp_path), base_model="lumos-tiny",
                       metadata={"job": "j1"})
    assert isinstance(rec, AdapterRecord)
    assert Path(rec.path, "adapter_config.json").is_file()
    got = reg.get("sql-v1")
    assert got.base_model == "lumos-tiny" and got.metadata == {"job": "j1"}
    assert got.created_at == rec.created_at
    assert [r.name for r in reg.list()] == ["sql-v1"]
    # A second registry object over the same dir sees it (it is just a directory).
    assert AdapterRegistry(tmp_path / "reg").get("sql-v1").path == rec.path
    reg.remove("sql-v1")
    assert reg.list() == []
    with pytest.raises(AdapterError):
        reg.get("sql-v1")


def test_unknown_and_invalid(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path)
    with pytest.raises(AdapterError) as ei:
        reg.get("nope")
    assert ei.value.code == "LUMOS-E043"
    assert pickle.loads(pickle.dumps(ei.value)).code == "LUMOS-E043"
    with pytest.raises(AdapterError):
        reg.remove("nope")
    for bad in ["../x", "a/b", "", ".hidden", "x" * 200]:
        with pytest.raises(AdapterError):
            reg.register(bad, _adapter_dir(tmp_path, f"s{abs(hash(bad))}"), base_model="m")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdapterError, match=r"adapter_config\.json"):
        reg.register("ok", empty, base_model="m")


def test_overwrite(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    reg.register("a", _adapter_dir(tmp_path, "one", r=4), base_model="m")
    with pytest.raises(AdapterError, match="already exists"):
        reg.register("a", _adapter_dir(tmp_path, "two", r=8), base_model="m")
    rec = reg.register("a", tmp_path / "two", base_model="m2", overwrite=True)
    assert Path(rec.path, "adapter_model.safetensors").read_bytes() == b"weights-8"
    assert reg.get("a").base_model == "m2"
    assert [p.name for p in (tmp_path / "reg").iterdir()] == ["a"]  # no staging left


def test_default_root_follows_lumos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    assert AdapterRegistry().root == (tmp_path / "home" / "adapters").resolve()
