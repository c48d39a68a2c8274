"""Every non-network built-in tool, including its safety refusals (no Ray)."""

from __future__ import annotations

import datetime as dt
import email
import json
import os
import sqlite3
from pathlib import Path

import pytest

from lumos_ray.errors import ToolArgumentError, ToolError, ToolNotAllowedError
from lumos_ray.tools._api import ToolContext, get_tool


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def ctx(ws: Path) -> ToolContext:
    return ToolContext(run_id="run-1", workspace=str(ws))


async def call(name: str, args: dict, ctx: ToolContext | None = None):
    return await get_tool(name).acall(args, ctx)


# ---------------------------------------------------------------- math
async def test_calculator_evaluates_without_eval():
    assert await call("calculator", {"expression": "2 * (3 + 4) ** 2 / sqrt(16)"}) == 24.5
    assert (
        await call("calculator", {"expression": "-7 // 2 + 10 % 3 + round(pi, 2)"}) == -4 + 1 + 3.14
    )
    for bad in ("__import__('os').system('true')", "(1).__class__", "x + 1", "[1, 2]"):
        with pytest.raises(ToolNotAllowedError):
            await call("calculator", {"expression": bad})
    with pytest.raises(ToolNotAllowedError, match="exponent"):
        await call("calculator", {"expression": "9 ** 9 ** 9"})
    with pytest.raises(ToolError, match="division by zero"):
        await call("calculator", {"expression": "1 / 0"})
    with pytest.raises(ToolError, match="not a valid arithmetic"):
        await call("calculator", {"expression": "2 +"})


async def test_describe_numbers_and_unit_convert():
    s = await call("describe_numbers", {"numbers": [1, 2, 3, 4]})
    assert s["count"] == 4 and s["mean"] == 2.5 and s["median"] == 2.5 and s["max"] == 4
    assert abs(s["stdev"] - 1.2909944) < 1e-6
    with pytest.raises(ToolError):
        await call("describe_numbers", {"numbers": []})
    assert (await call("unit_convert", {"value": 1, "from_unit": "mi", "to_unit": "km"}))[
        "value"
    ] == pytest.approx(1.609344)
    assert (await call("unit_convert", {"value": 100, "from_unit": "C", "to_unit": "F"}))[
        "value"
    ] == pytest.approx(212)
    with pytest.raises(ToolError, match="cannot convert"):
        await call("unit_convert", {"value": 1, "from_unit": "kg", "to_unit": "m"})


# ---------------------------------------------------------------- file
async def test_write_read_list_search_inside_workspace(ctx, ws):
    w = await call("write_file", {"path": "notes/a.txt", "content": "hello\nworld\n"}, ctx)
    assert w == {"path": "notes/a.txt", "bytes_written": 12, "mode": "overwrite"}
    await call("write_file", {"path": "notes/a.txt", "content": "again\n", "mode": "append"}, ctx)
    await call("write_file", {"path": "b.py", "content": "print('world')\n"}, ctx)
    assert (ws / "notes" / "a.txt").read_text() == "hello\nworld\nagain\n"
    r = await call("read_file", {"path": "notes/a.txt", "max_bytes": 5}, ctx)
    assert r["content"] == "hello" and r["truncated"] and r["size"] == 18
    with pytest.raises(ToolError, match="already exists"):
        await call("write_file", {"path": "b.py", "content": "x", "mode": "create"}, ctx)
    listing = await call("list_dir", {"recursive": True}, ctx)
    assert [e["path"] for e in listing["entries"]] == ["notes", "b.py", "notes/a.txt"]
    found = await call("search_files", {"pattern": "*", "contains": "wor+ld"}, ctx)
    assert [h["path"] for h in found["results"]] == ["b.py", "notes/a.txt"]
    assert found["results"][1]["matches"] == [{"line": 2, "text": "world"}]
    only_py = await call("search_files", {"pattern": "*.PY", "ignore_case": True}, ctx)
    assert [h["path"] for h in only_py["results"]] == ["b.py"]


async def test_file_tools_refuse_traversal_absolute_paths_and_symlink_escapes(ctx, ws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, ws / "link.txt")
    os.symlink(tmp_path, ws / "outside_dir")
    for path in ("../secret.txt", str(secret), "link.txt", "outside_dir/secret.txt", "a/../../x"):
        with pytest.raises(ToolNotAllowedError, match="outside the workspace"):
            await call("read_file", {"path": path}, ctx)
    with pytest.raises(ToolNotAllowedError):
        await call("write_file", {"path": "outside_dir/evil.txt", "content": "x"}, ctx)
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(ToolNotAllowedError):
        await call("list_dir", {"path": ".."}, ctx)
    # walks never show (or grep) what a symlink points to outside the workspace
    listing = await call("list_dir", {"recursive": True}, ctx)
    assert listing["entries"] == []
    found = await call("search_files", {"contains": "secret"}, ctx)
    assert found["results"] == []


async def test_workspace_can_be_read_only(ws):
    ro = ToolContext(workspace=str(ws), settings={"file": {"read_only": True}})
    with pytest.raises(ToolNotAllowedError, match="read-only"):
        await call("write_file", {"path": "x.txt", "content": "x"}, ro)


async def test_default_workspace_is_under_lumos_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path / "home"))
    await call("write_file", {"path": "x.txt", "content": "x"})
    assert (tmp_path / "home" / "workspace" / "x.txt").read_text() == "x"


# ---------------------------------------------------------------- data
async def test_json_query_paths_projections_filters():
    data = {
        "store": {
            "items": [
                {"name": "pen", "price": 2, "tags": ["office"]},
                {"name": "lamp", "price": 30},
                {"name": "desk", "price": 250, "tags": []},
            ]
        }
    }
    q = lambda expr: call("json_query", {"data": data, "query": expr})  # noqa: E731
    assert await q("store.items[1].name") == "lamp"
    assert await q("store.items[-1].price") == 250
    assert await q("store.items[*].name") == ["pen", "lamp", "desk"]
    assert await q("store.items[?price > `10`].name") == ["lamp", "desk"]
    assert await q("store.items[?name == 'pen'].price") == [2]
    assert await q("store.items[?tags].name") == ["pen"]
    assert await q("store.items[:2].name") == ["pen", "lamp"]
    assert await q("store.items | length") == 3
    assert await q("store.items[*].price | sum") == 282
    assert await q("store | keys") == ["items"]
    assert await q("store.missing.deeper") is None
    assert await call("json_query", {"data": '{"a": {"b": 1}}', "query": "a.b"}) == 1
    with pytest.raises(ToolError):
        await q("store.items[?price >]")


async def test_csv_stats_from_text_and_workspace_file(ctx, ws):
    csv_text = "city,temp,note\nOslo,3,cold\nRome,18,\nLima,18,warm\n"
    s = await call("csv_stats", {"text": csv_text})
    assert s["rows"] == 3
    assert s["columns"]["temp"]["type"] == "number" and s["columns"]["temp"]["mean"] == 13
    assert s["columns"]["note"] == {
        "count": 2,
        "missing": 1,
        "type": "string",
        "distinct": 2,
        "top": [{"value": "cold", "count": 1}, {"value": "warm", "count": 1}],
    }
    (ws / "t.csv").write_text(csv_text)
    assert (await call("csv_stats", {"path": "t.csv"}, ctx))["columns"]["temp"]["max"] == 18
    with pytest.raises(ToolError, match="exactly one"):
        await call("csv_stats", {})
    with pytest.raises(ToolNotAllowedError):
        await call("csv_stats", {"path": "../t.csv"}, ctx)


async def test_text_stats_and_regex_extract():
    t = await call("text_stats", {"text": "The cat sat. The cat ran!\nA dog barked?", "top_n": 1})
    assert t["words"] == 9 and t["sentences"] == 3 and t["lines"] == 2
    assert t["top_words"] == [{"word": "cat", "count": 2}]
    r = await call(
        "regex_extract",
        {"pattern": r"(?P<user>\w+)@(\w+)\.com", "text": "a@x.com, B@Y.COM", "flags": ["i"]},
    )
    assert r["count"] == 2 and r["matches"][1]["named"] == {"user": "B"}
    assert r["matches"][0]["groups"] == ["a", "x"]
    with pytest.raises(ToolError, match="invalid regular expression"):
        await call("regex_extract", {"pattern": "(", "text": "x"})
    with pytest.raises(ToolArgumentError):
        await call("regex_extract", {"pattern": "x", "text": "x", "flags": ["q"]})


# ---------------------------------------------------------------- system
async def test_datetime_now_and_timezone_convert():
    now = await call("datetime_now", {"timezone": "Asia/Tokyo"})
    assert now["utc_offset"] == "+0900"
    parsed = dt.datetime.fromisoformat(now["iso"])
    assert abs(parsed.timestamp() - dt.datetime.now(dt.UTC).timestamp()) < 300
    c = await call(
        "timezone_convert",
        {"time": "2026-07-01T12:00:00", "from_timezone": "UTC", "to_timezone": "Europe/Paris"},
    )
    assert c["iso"] == "2026-07-01T14:00:00+02:00"
    c2 = await call("timezone_convert", {"time": "2026-01-01T00:00:00Z", "to_timezone": "UTC"})
    assert c2["iso"] == "2026-01-01T00:00:00+00:00"
    with pytest.raises(ToolError, match="unknown time zone"):
        await call("datetime_now", {"timezone": "Mars/Olympus"})


async def test_system_info_reports_this_process():
    info = await call("system_info", {})
    assert info["pid"] == os.getpid() and info["cpu_count"] == os.cpu_count()


async def test_code_execution_is_refused_without_the_sandbox_setting(ctx, ws):
    marker = ws / "ran.txt"
    with pytest.raises(ToolNotAllowedError, match="sandbox"):
        await call("python_exec", {"code": f"open({str(marker)!r}, 'w')"}, ctx)
    with pytest.raises(ToolNotAllowedError, match="sandbox"):
        await call("shell", {"command": f"touch {marker}"}, ctx)
    with pytest.raises(ToolNotAllowedError):
        await call("shell", {"command": "true"})  # no context at all: refused too
    assert not marker.exists()


async def test_sandboxed_execution_runs_in_the_workspace_with_limits(ws):
    sb = ToolContext(workspace=str(ws), settings={"sandbox": {"enabled": True}})
    r = await call(
        "python_exec", {"code": "import os; print(os.getcwd()); print(input())", "stdin": "hi"}, sb
    )
    assert r["exit_code"] == 0 and r["stdout"].split() == [str(ws), "hi"]
    r = await call("shell", {"command": "echo data > out.txt; cat out.txt; exit 3"}, sb)
    assert r["exit_code"] == 3 and r["stdout"] == "data\n" and (ws / "out.txt").exists()
    r = await call("shell", {"command": "sleep 30", "timeout_s": 0.5}, sb)
    assert r["timed_out"] is True and r["exit_code"] != 0
    r = await call("python_exec", {"code": "x = bytearray(4 << 30)"}, sb)  # over RLIMIT_AS
    assert r["exit_code"] != 0 and "MemoryError" in r["stderr"]


# ---------------------------------------------------------------- database
@pytest.fixture
def db(ws: Path) -> str:
    conn = sqlite3.connect(ws / "shop.db")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)")
    conn.executemany("INSERT INTO items (name, price) VALUES (?, ?)", [("pen", 2), ("lamp", 30)])
    conn.commit()
    conn.close()
    return "shop.db"


async def test_sql_query_reads_with_params_and_schema(ctx, db):
    r = await call(
        "sql_query",
        {"database": db, "query": "SELECT name FROM items WHERE price > ?", "params": [5]},
        ctx,
    )
    assert r == {"columns": ["name"], "rows": [["lamp"]], "row_count": 1, "truncated": False}
    r = await call(
        "sql_query", {"database": db, "query": "SELECT * FROM items", "max_rows": 1}, ctx
    )
    assert r["truncated"] and r["row_count"] == 1
    s = await call("sql_schema", {"database": db}, ctx)
    assert [c["name"] for c in s["tables"]["items"]] == ["id", "name", "price"]
    with pytest.raises(ToolError, match="SQL error"):
        await call("sql_query", {"database": db, "query": "SELECT nope FROM items"}, ctx)


async def test_sql_is_read_only_unless_allowed_and_never_attaches(ctx, ws, db, tmp_path):
    with pytest.raises(ToolNotAllowedError, match="read-only"):
        await call("sql_query", {"database": db, "query": "DELETE FROM items"}, ctx)
    outside = tmp_path / "other.db"
    sqlite3.connect(outside).close()
    rw = ToolContext(workspace=str(ws), settings={"sql": {"allow_write": True}})
    with pytest.raises(ToolNotAllowedError, match="ATTACH"):
        await call("sql_query", {"database": db, "query": f"ATTACH '{outside}' AS o"}, rw)
    r = await call("sql_query", {"database": db, "query": "DELETE FROM items WHERE price < 5"}, rw)
    assert r["rows_affected"] == 1
    with pytest.raises(ToolNotAllowedError):
        await call("sql_query", {"database": "../other.db", "query": "SELECT 1"}, rw)


# ---------------------------------------------------------------- communication
async def test_send_email_writes_an_eml_to_the_outbox_once_per_key(ws):
    ctx = ToolContext(run_id="r9", workspace=str(ws), idempotency_key="run-r9/step-3")
    args = {"to": ["ann@example.com"], "subject": "Report", "body": "All good.", "cc": ["b@x.org"]}
    first = await call("send_email", args, ctx)
    again = await call("send_email", args, ctx)
    assert first["duplicate"] is False and again["duplicate"] is True
    assert first["path"] == again["path"] and first["path"].startswith("outbox/")
    files = list((ws / "outbox").glob("*.eml"))
    assert len(files) == 1
    msg = email.message_from_bytes(files[0].read_bytes())
    assert msg["To"] == "ann@example.com" and msg["Cc"] == "b@x.org"
    assert msg["Subject"] == "Report" and msg["X-Lumos-Run"] == "r9"
    assert msg.get_payload().strip() == "All good."
    with pytest.raises(ToolError, match="not an e-mail address"):
        await call("send_email", {"to": ["nobody"], "subject": "s", "body": "b"}, ctx)
    with pytest.raises(ToolError, match="single line"):
        await call("send_email", {"to": ["a@b.co"], "subject": "s\nBcc: x@y.z", "body": "b"}, ctx)


# ---------------------------------------------------------------- ai
async def test_text_similarity_and_chunk_text():
    same = await call("text_similarity", {"a": "the cat sat", "b": "The cat sat"})
    assert same == {"cosine": pytest.approx(1.0), "jaccard": 1.0}
    diff = await call("text_similarity", {"a": "red apples", "b": "blue sky"})
    assert diff == {"cosine": 0.0, "jaccard": 0.0}
    text = ("Sentence number %d is here. " * 40) % tuple(range(40))
    out = await call("chunk_text", {"text": text, "max_chars": 200, "overlap": 20})
    assert out["count"] > 5
    assert all(len(c["text"]) <= 200 for c in out["chunks"])
    assert out["chunks"][0]["text"].endswith(". ")  # cut on a sentence boundary
    covered = "".join(text[c["start"] : c["end"]] for c in out["chunks"])
    assert len(covered) >= len(text)
    assert out["chunks"][1]["start"] < out["chunks"][0]["end"]  # overlap
    with pytest.raises(ToolError):
        await call("chunk_text", {"text": "x", "max_chars": 10})


# ---------------------------------------------------------------- added data/web/system tools
async def test_json_validate_lists_every_violation():
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0}, "tags": {"type": "array"}},
        "required": ["name"],
    }
    r = await call("json_validate", {"data": {"age": -1, "tags": "x"}, "json_schema": schema})
    assert r["valid"] is False
    assert {e["path"] for e in r["errors"]} == {"/", "/age", "/tags"}
    ok = await call("json_validate", {"data": '{"name": "a", "age": 3}', "json_schema": schema})
    assert ok == {"valid": True, "errors": []}
    with pytest.raises(ToolError, match="schema itself is invalid"):
        await call("json_validate", {"data": 1, "json_schema": {"type": "nonsense"}})


async def test_convert_format_round_trips_and_never_builds_python_objects():
    csv_text = "name,qty\npen,2\nlamp,1\n"
    as_json = await call(
        "convert_format", {"content": csv_text, "from_format": "csv", "to_format": "json"}
    )
    assert json.loads(as_json) == [{"name": "pen", "qty": "2"}, {"name": "lamp", "qty": "1"}]
    as_yaml = await call(
        "convert_format", {"content": as_json, "from_format": "json", "to_format": "yaml"}
    )
    assert as_yaml.startswith("- name: pen")
    back = await call(
        "convert_format", {"content": as_yaml, "from_format": "yaml", "to_format": "csv"}
    )
    assert back == csv_text
    with pytest.raises(ToolError, match="cannot parse yaml"):
        await call(
            "convert_format",
            {
                "content": "!!python/object/apply:os.system ['true']",
                "from_format": "yaml",
                "to_format": "json",
            },
        )


async def test_hash_text_url_parse_and_date_diff():
    h = await call("hash_text", {"text": "abc"})
    assert h["digest"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert (await call("hash_text", {"text": "abc", "algorithm": "md5", "encoding": "base64"}))[
        "digest"
    ] == "kAFQmDzST7DWlj99KOF/cg=="
    u = await call("url_parse", {"url": "https://user@example.com:8443/a/b?q=1&t=x&t=y#top"})
    assert u == {
        "scheme": "https",
        "host": "example.com",
        "port": 8443,
        "path": "/a/b",
        "query": {"q": "1", "t": ["x", "y"]},
        "fragment": "top",
        "username": "user",
    }
    d = await call("date_diff", {"start": "2026-11-20", "end": "2026-11-30T12:00:00"})
    assert d["days"] == 10 and d["total_hours"] == 252 and d["weekdays"] == 6
    back = await call("date_diff", {"start": "2026-11-30", "end": "2026-11-20"})
    assert back["days"] == -10 and back["weekdays"] == -6
