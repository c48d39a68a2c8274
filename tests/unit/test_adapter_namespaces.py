"""Adapter names: one namespace per tenant plus the shared one (issue 12's finding: a
single namespace told tenant B that tenant A had an adapter of a name, and let A squat
names). Real registries on disk in tmp_path; no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lumos_ray.adapters import AdapterRegistry
from lumos_ray.errors import AdapterError, NotFoundError

A, B = "acme", "globex"


def _src(tmp_path: Path, tag: str) -> Path:
    # peft's on-disk layout (importing peft itself costs seconds in a unit test).
    d = tmp_path / f"src-{tag}"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (d / "adapter_model.safetensors").write_bytes(f"weights-{tag}".encode())
    return d


def _weights(path: str) -> bytes:
    return Path(path, "adapter_model.safetensors").read_bytes()


def test_two_tenants_each_register_the_same_name_and_get_their_own(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    a = reg.register("foo", _src(tmp_path, "a"), base_model="m", tenant=A)
    b = reg.register("foo", _src(tmp_path, "b"), base_model="m", tenant=B)  # no clash
    assert _weights(reg.get_for("foo", A).path) == b"weights-a"
    assert _weights(reg.get_for("foo", B).path) == b"weights-b"
    assert a.serve_id != b.serve_id and "foo" not in (a.serve_id, b.serve_id)
    assert reg.get_by_serve_id(a.serve_id).tenant == A
    assert _weights(reg.get_by_serve_id(b.serve_id).path) == b"weights-b"
    # Versions are numbered per namespace too.
    assert reg.register_version("bar", _src(tmp_path, "av"), base_model="m", tenant=A).version == 1
    assert reg.register_version("bar", _src(tmp_path, "bv"), base_model="m", tenant=B).version == 1
    assert reg.latest("bar", A).tenant == A and reg.versions("bar") == []
    # The operator's view lists both, each with its tenant.
    assert [(r.name, r.tenant) for r in reg.list() if r.name == "foo"] == [("foo", A), ("foo", B)]


def test_a_tenant_cannot_see_overwrite_or_remove_anothers(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    reg.register("only-b", _src(tmp_path, "b"), base_model="m", tenant=B)
    with pytest.raises(NotFoundError) as theirs:
        reg.get_for("only-b", A)
    with pytest.raises(NotFoundError) as never:
        reg.get_for("never-x", A)
    # The same answer whether B has the name or nobody does.
    assert theirs.value.message.replace("only-b", "N") == never.value.message.replace(
        "never-x", "N"
    )
    assert theirs.value.code == never.value.code and not reg.exists_for("only-b", A)
    assert reg.list_for(A) == [] and reg.find_for("only-b", A) is None
    # "Overwriting" it as A creates A's own; B's is untouched.
    reg.register("only-b", _src(tmp_path, "a"), base_model="m", tenant=A, overwrite=True)
    assert _weights(reg.get_for("only-b", B).path) == b"weights-b"
    assert _weights(reg.get_for("only-b", A).path) == b"weights-a"
    reg.remove("only-b", A)
    with pytest.raises(AdapterError, match="Unknown adapter"):
        reg.remove("only-b", A)  # A's is gone; B's is not A's to remove
    assert _weights(reg.get_for("only-b", B).path) == b"weights-b"


def test_a_tenants_lookups_never_read_another_tenants_records(tmp_path: Path) -> None:
    """B's record of "foo" is unreadable: a lookup of "foo" by A that read it would
    fail on it. A gets the plain unknown-adapter answer (or the shared one)."""
    reg = AdapterRegistry(tmp_path / "reg")
    reg.register("foo", _src(tmp_path, "b"), base_model="m", tenant=B)
    Path(reg.get("foo", B).path).parent.joinpath("metadata.json").write_text("{not json")
    with pytest.raises(NotFoundError, match="Unknown adapter 'foo'"):
        reg.get_for("foo", A)
    assert reg.list_for(A) == []
    reg.register("foo", _src(tmp_path, "s"), base_model="m")  # a shared "foo"
    assert reg.get_for("foo", A).tenant is None
    with pytest.raises(AdapterError, match="unreadable metadata"):
        reg.get_for("foo", B)  # B's own broken record is B's problem only


def test_shared_adapters_are_visible_to_all_and_an_own_one_shadows_them(tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    reg.register("sql", _src(tmp_path, "shared"), base_model="m")
    reg.register("chat", _src(tmp_path, "chat"), base_model="m")
    reg.register("sql", _src(tmp_path, "mine"), base_model="m", tenant=A)
    assert reg.get("sql").serve_id == "sql"  # shared ids keep the plain name
    assert _weights(reg.get_for("sql", A).path) == b"weights-mine"
    assert _weights(reg.get_for("sql", B).path) == b"weights-shared"
    assert [(r.name, r.tenant) for r in reg.list_for(A)] == [("chat", None), ("sql", A)]
    assert [(r.name, r.tenant) for r in reg.list_for(B)] == [("chat", None), ("sql", None)]
    reg.remove("sql", A)  # A falls back to the shared one
    assert _weights(reg.get_for("sql", A).path) == b"weights-shared"


@pytest.mark.parametrize(
    "bad", ["../x", "a/b", "a\x00b", "x" * 101, "foo\n", "", ".hidden", "a..b", "_tenants", 7]
)
def test_bad_names_are_refused_with_a_clear_message(tmp_path: Path, bad: object) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    with pytest.raises(AdapterError) as err:
        reg.register(bad, _src(tmp_path, "a"), base_model="m", tenant=A)  # type: ignore[arg-type]
    assert "Invalid adapter name" in err.value.message and "letters, digits" in err.value.message
    assert err.value.fix and len(err.value.message) < 300
    with pytest.raises(NotFoundError):
        reg.get_for(bad, A)  # type: ignore[arg-type]
    assert not reg.exists(bad) and reg.find_for(bad, A) is None  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src-a"]  # nothing written


@pytest.mark.parametrize("bad", ["../evil", "a/b", "", "t\x00", "x" * 65, "a~b"])
def test_bad_tenant_ids_are_refused_before_any_path_is_built(tmp_path: Path, bad: str) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    with pytest.raises(AdapterError, match="Invalid tenant id"):
        reg.register("foo", _src(tmp_path, "a"), base_model="m", tenant=bad)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "reg" / "_tenants").exists()


@pytest.mark.parametrize("bad", ["foo~", "~acme", "foo~../x", "a~b~c", "../x", "x" * 300])
def test_malformed_serving_ids_name_nothing(tmp_path: Path, bad: str) -> None:
    reg = AdapterRegistry(tmp_path / "reg")
    reg.register("foo", _src(tmp_path, "a"), base_model="m", tenant=A)
    with pytest.raises(AdapterError):
        reg.get_by_serve_id(bad)


def test_registry_from_before_the_namespaces_keeps_working(tmp_path: Path) -> None:
    """The old layout: every adapter at <root>/<name>/, a tenant's marked in its
    metadata. Shared ones stay; a tenant's move into its namespace on first use."""
    root = tmp_path / "reg"
    for name, tenant in [("old-shared", None), ("old-a", A), ("taken", A)]:
        d = root / name / "adapter"
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text("{}")
        (d / "adapter_model.safetensors").write_bytes(name.encode())
        meta = {"name": name, "path": "/elsewhere", "base_model": "m", "tenant": tenant}
        (d.parent / "metadata.json").write_text(
            json.dumps({**meta, "created_at": "2026-11-01T00:00:00Z"})
        )
    # A later (new-layout) "taken" of A: the old one cannot move over it.
    new = AdapterRegistry(tmp_path / "other")
    new.register("taken", _src(tmp_path, "new"), base_model="m", tenant=A)
    (root / "_tenants").mkdir()
    (tmp_path / "other" / "_tenants" / A).rename(root / "_tenants" / A)

    reg = AdapterRegistry(root)
    assert _weights(reg.get("old-shared").path) == b"old-shared"  # same place as before
    assert _weights(reg.get_for("old-shared", B).path) == b"old-shared"
    got = reg.get_for("old-a", A)
    assert got.tenant == A and _weights(got.path) == b"old-a"
    assert Path(got.path).parent == root / "_tenants" / A / "old-a"  # moved once
    assert not (root / "old-a").exists()
    with pytest.raises(NotFoundError):
        reg.get_for("old-a", B)
    # The one that could not move stays put, and is never served as a shared adapter.
    assert (root / "taken").is_dir() and not reg.exists("taken")
    assert _weights(reg.get_for("taken", A).path) == b"weights-new"
    with pytest.raises(NotFoundError):
        reg.get_for("taken", B)
    assert {(r.name, r.tenant) for r in reg.list()} == {
        ("old-shared", None),
        ("old-a", A),
        ("taken", A),
    }


def test_storage_counts_a_tenants_namespace(tmp_path: Path) -> None:
    from lumos_ray.platform import Plan, Plans, Platform

    plans = Plans(
        default_plan="p",
        plans={"p": Plan(api_calls_per_month=None, concurrent_agents=None, storage_bytes=None)},
    )
    home = tmp_path / "home"
    reg = AdapterRegistry(home / "adapters")
    big = _src(tmp_path, "big")
    (big / "adapter_model.safetensors").write_bytes(b"\0" * 5000)
    reg.register("foo", big, base_model="m", tenant=A)
    reg.register("foo", _src(tmp_path, "b"), base_model="m", tenant=B)
    reg.register("shared", big, base_model="m")
    p = Platform(f"sqlite:///{tmp_path / 'p.db'}", plans=plans, shared=False, home=str(home))
    try:
        assert 5000 <= p.storage(A).adapters < 5000 + 1000
        assert p.storage(B).adapters < 1000
    finally:
        p.close()


def test_cli_registers_lists_and_removes_per_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from click.testing import CliRunner

    from lumos_ray.cli import _load_commands, cli

    _load_commands()
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    run = CliRunner().invoke
    src = str(_src(tmp_path, "a"))
    for args in (["--tenant", A], ["--tenant", B], []):
        r = run(cli, ["serve", "adapters", "add", "foo", src, *args, "--json"])
        assert r.exit_code == 0, r.output
    r = run(cli, ["serve", "adapters", "list", "--json"])
    assert sorted(str(x["tenant"]) for x in json.loads(r.output)) == ["None", A, B]
    r = run(cli, ["serve", "adapters", "list", "--tenant", A, "--json"])
    assert [(x["name"], x["tenant"]) for x in json.loads(r.output)] == [("foo", A)]
    assert run(cli, ["serve", "adapters", "remove", "foo", "--tenant", A]).exit_code == 0
    r = run(cli, ["serve", "adapters", "list", "--tenant", A, "--json"])
    assert [(x["name"], x["tenant"]) for x in json.loads(r.output)] == [("foo", None)]

    from lumos_ray.cli import main

    with pytest.raises(SystemExit) as code:  # the real entry point: a message, no trace
        main(["serve", "adapters", "add", "../x", src, "--tenant", A])
    err = capsys.readouterr().err
    assert code.value.code == 1 and "Invalid adapter name" in err and "Traceback" not in err
