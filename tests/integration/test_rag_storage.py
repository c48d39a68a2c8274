"""RAG storage never deletes what it did not write, and a collection is found by name
wherever its snapshots live (issue 14): through the real `lumos rag` CLI and pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_rag_pool import _lumos


@pytest.mark.slow
def test_rag_custom_snapshot_dir_is_queried_and_dropped_by_name_and_keeps_other_files(
    ray_cluster, tmp_path, capsys
):
    store = tmp_path / "shared-folder"
    store.mkdir()
    unrelated = store / "notes.txt"  # the user's file, in the folder they named
    unrelated.write_text("not yours")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "spire.md").write_text(
        "# Quorvath Spire\n\nThe Quorvath Spire is a granite tower in Plinthaven."
    )
    cfg = tmp_path / "coll.yaml"
    cfg.write_text(f"name: custom-dir\nnum_shards: 2\nsnapshot_dir: {store}\n")

    code, out, _ = _lumos(
        ["rag", "ingest", str(docs), "-c", "custom-dir", "--config", str(cfg), "--json"], capsys
    )
    assert code == 0, out
    # The collection lives in its own sub-folder: <snapshot_dir>/<tenant>/<name>.
    root = store / "default" / "custom-dir"
    assert json.loads((root / "collection.json").read_text())["snapshot_dir"] == str(store)
    assert (root / "shard-0" / "shard.snap").exists() or (root / "shard-1" / "shard.snap").exists()
    assert sorted(p.name for p in store.iterdir()) == ["default", "notes.txt"]
    # A file someone put inside the collection's own folder is not ours either.
    (root / "README").write_text("kept")

    # Found by name afterwards, without the config: query, stats, list.
    code, out, _ = _lumos(
        ["rag", "query", "granite tower", "-c", "custom-dir", "-m", "naive", "--json"], capsys
    )
    assert code == 0, out
    assert json.loads(out)[0]["doc_id"] == "spire.md"
    code, out, _ = _lumos(["rag", "stats", "-c", "custom-dir", "--json"], capsys)
    assert code == 0 and json.loads(out)["snapshot_dir"] == str(root)
    code, out, _ = _lumos(["rag", "stats", "--json"], capsys)
    assert "custom-dir" in json.loads(out)["collections"]
    # The registry entry that made that possible lives under LUMOS_HOME, per tenant.
    from lumos_ray import runtime

    entry = Path(runtime.current_settings().home) / "rag/default/_registry/custom-dir.json"
    assert json.loads(entry.read_text())["root"] == str(root)

    # Dropped by name: only what the collection wrote goes.
    code, out, _ = _lumos(["rag", "delete", "-c", "custom-dir", "--all", "--json"], capsys)
    assert code == 0 and json.loads(out)["dropped"] is True
    assert unrelated.read_text() == "not yours"
    assert (root / "README").read_text() == "kept"
    assert sorted(p.name for p in root.iterdir()) == ["README"]  # no config, no shards
    assert not entry.exists()
    code, out, _ = _lumos(["rag", "query", "x", "-c", "custom-dir", "--json"], capsys)
    assert code == 1 and json.loads(out)["error"]["code"] == "LUMOS-E003"

    # Without foreign files the folders go too (the default location as well).
    code, out, _ = _lumos(["rag", "ingest", str(docs), "-c", "plain-dir", "--json"], capsys)
    assert code == 0, out
    home_root = Path(runtime.current_settings().home) / "rag" / "default" / "plain-dir"
    assert (home_root / "collection.json").exists()
    code, out, _ = _lumos(["rag", "delete", "-c", "plain-dir", "--all", "--json"], capsys)
    assert code == 0 and not home_root.exists()


@pytest.mark.slow
def test_rag_a_name_registered_elsewhere_is_not_opened_at_another_place(ray_cluster, tmp_path):
    from lumos_ray.errors import RagError
    from lumos_ray.rag import CollectionConfig, RagCollection

    a, b = tmp_path / "a", tmp_path / "b"
    coll = RagCollection.open("placed", config=CollectionConfig(name="placed", snapshot_dir=str(a)))
    try:
        assert coll.root == str(a / "default" / "placed")
        elsewhere = CollectionConfig(name="placed", snapshot_dir=str(b))
        with pytest.raises(RagError, match="already exists at") as err:
            RagCollection.open("placed", config=elsewhere)
        assert "lumos rag delete" in err.value.fix
        # Opening by name (no config, or a config without snapshot_dir) finds it.
        assert RagCollection.open("placed", create=False).root == coll.root
    finally:
        coll.drop()
    assert not (a / "default" / "placed").exists()


@pytest.mark.slow
def test_rag_collection_with_old_pickled_snapshots_says_how_to_reingest(
    ray_cluster, tmp_path, capsys
):
    """A collection an older version wrote (shard.pkl, a pickle): querying it is a clear
    error with the re-ingest commands, the pickle never runs, and `lumos rag delete
    --all` removes the old files so the collection can be ingested again."""
    import pickle

    from lumos_ray import runtime
    from lumos_ray.rag import CollectionConfig

    class Exploit:
        def __reduce__(self):
            return (Path(str(tmp_path / "pwned")).touch, ())

    root = Path(runtime.current_settings().home) / "rag" / "default" / "legacy-coll"
    (root / "shard-0").mkdir(parents=True)
    (root / "collection.json").write_text(CollectionConfig(name="legacy-coll").model_dump_json())
    (root / "shard-0" / "shard.pkl").write_bytes(pickle.dumps({"format": 1, "x": Exploit()}))

    code, out, _ = _lumos(["rag", "query", "x", "-c", "legacy-coll", "--json"], capsys)
    assert code == 1, out
    err = json.loads(out)["error"]
    assert "older lumos_ray as a pickle" in err["message"]
    assert "lumos rag delete --collection legacy-coll --all" in err["fix"]
    assert not (tmp_path / "pwned").exists()

    code, out, _ = _lumos(["rag", "delete", "-c", "legacy-coll", "--all", "--json"], capsys)
    assert code == 0, out
    assert not root.exists()
