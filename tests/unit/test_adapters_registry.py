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
        json.dumps(
            {"peft_type": "LORA", "r": r, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
        )
    )
    (d / "adapter_model.safetensors").write_bytes(b"weights-" + str(r).encode())
    return d


def test_register_get_list_remove(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    assert reg.list() == []
    rec = reg.register(
        "sql-v1", _adapter_dir(tmp_path), base_model="lumos-tiny", metadata={"job": "j1"}
    )
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


def test_register_version_adds_new_entries_and_never_touches_the_served_one(
    tmp_path: Path,
) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    served = reg.register("fed", _adapter_dir(tmp_path, "served", r=2), base_model="m")
    v1 = reg.register_version("fed", _adapter_dir(tmp_path, "one", r=4), base_model="m")
    v2 = reg.register_version(
        "fed", _adapter_dir(tmp_path, "two", r=8), base_model="m", metadata={"run": "r2"}
    )
    assert (v1.name, v1.version, v1.version_of) == ("fed-v1", 1, "fed")
    assert (v2.name, v2.version) == ("fed-v2", 2)
    # Every earlier entry still holds exactly what it held.
    assert Path(reg.get("fed").path, "adapter_model.safetensors").read_bytes() == b"weights-2"
    assert reg.get("fed").created_at == served.created_at
    assert Path(reg.get("fed-v1").path, "adapter_model.safetensors").read_bytes() == b"weights-4"
    assert [r.name for r in reg.versions("fed")] == ["fed-v1", "fed-v2"]
    assert reg.latest("fed").name == "fed-v2" and reg.latest("fed").metadata == {"run": "r2"}
    with pytest.raises(AdapterError, match="No versions"):
        reg.latest("other")
    assert sorted(p.name for p in (tmp_path / "reg").iterdir()) == ["fed", "fed-v1", "fed-v2"]


def test_register_version_skips_a_taken_number_instead_of_overwriting(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    # Someone registered "fed-v1" by hand (or a racing producer claimed it first).
    reg.register("fed-v1", _adapter_dir(tmp_path, "hand", r=3), base_model="m")
    rec = reg.register_version("fed", _adapter_dir(tmp_path, "new", r=5), base_model="m")
    assert rec.name == "fed-v2"
    assert Path(reg.get("fed-v1").path, "adapter_model.safetensors").read_bytes() == b"weights-3"


def test_concurrent_register_version_gets_distinct_versions(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    reg = AdapterRegistry(tmp_path / "reg")
    srcs = [_adapter_dir(tmp_path, f"s{i}", r=i + 1) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        recs = list(pool.map(lambda s: reg.register_version("fed", s, base_model="m"), srcs))
    assert sorted(r.version or 0 for r in recs) == [1, 2, 3, 4, 5, 6]
    for rec, src in zip(recs, srcs, strict=True):
        got = Path(reg.get(rec.name).path, "adapter_model.safetensors").read_bytes()
        assert got == (src / "adapter_model.safetensors").read_bytes()
