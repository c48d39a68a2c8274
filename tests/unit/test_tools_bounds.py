"""Hostile input to the built-in tools ends within its bound with a clear tool error
(issue 14). The time limits here are the hang-prevention bounds the issue asks for."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import tracemalloc
from pathlib import Path

import pytest

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._api import ToolContext, get_tool
from lumos_ray.tools._builtins._sandbox import available_isolation


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


#: Hang guard of the calls whose bound is a CPU budget (the regex ones: 1-2 CPU seconds)
#: or that need a CPU second or so (csv_stats on its budgets, listing 10,050 files):
#: on a loaded box at nice 19 (load 14 on 2 cores) a CPU second took over 10 s of wall
#: time, and the 10 s default failed them. Without the budget these tests still fail:
#: the call then ends (or hangs past 60 s) without the "took longer than" error.
SLOW_BOUND_S = 60.0


async def call(name: str, args: dict, ctx: ToolContext | None = None, bound_s: float = 10.0):
    """The tool's answer, or a test failure once ``bound_s`` has passed."""
    return await asyncio.wait_for(get_tool(name).acall(args, ctx), bound_s)


def sandbox(ws: Path, isolation: str = "none", **extra: object) -> ToolContext:
    return ToolContext(
        workspace=str(ws),
        settings={"sandbox": {"enabled": True, "isolation": isolation, **extra}},
    )


async def test_calculator_refuses_a_huge_power_in_under_two_seconds():
    t0 = time.process_time()  # CPU seconds: computing the power would take minutes
    with pytest.raises(ToolNotAllowedError, match="refused before computing"):
        await call("calculator", {"expression": "(9**9999)**3000"}, bound_s=60)
    assert time.process_time() - t0 < 2.0
    assert await call("calculator", {"expression": "2 ** 100"}) == 2**100


async def test_convert_format_refuses_a_yaml_alias_bomb():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for name, prev in zip("bcdefghi", "abcdefgh", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(lines)
    assert len(bomb) < 400
    with pytest.raises(ToolNotAllowedError, match="expands to more than"):
        await call("convert_format", {"content": bomb, "from_format": "yaml", "to_format": "json"})
    ok = await call(
        "convert_format", {"content": "x: &x [1, 2]\ny: *x", "from_format": "yaml",
                           "to_format": "json"},
    )  # fmt: skip
    assert '"y": [' in ok


async def test_convert_format_refuses_a_recursive_alias():
    with pytest.raises(ToolNotAllowedError, match="refers to itself"):
        await call("convert_format", {"content": "&a [*a]", "from_format": "yaml",
                                      "to_format": "json"})  # fmt: skip


async def test_search_files_stops_a_catastrophic_regex(ws: Path):
    (ws / "f.txt").write_text("a" * 34 + "!\n")
    ctx = ToolContext(workspace=str(ws))
    # The regex budget is in CPU seconds of the matching thread (the wall clock of a
    # loaded machine runs longer): bound the CPU this process spent, not wall time.
    t0 = time.process_time()
    with pytest.raises(ToolNotAllowedError, match="took longer than"):
        await call("search_files", {"contains": "^(a|a)+$"}, ctx, bound_s=SLOW_BOUND_S)
    assert time.process_time() - t0 < 20.0
    with pytest.raises(ToolNotAllowedError, match="limit is 1000"):
        await call("search_files", {"contains": "a" * 1001}, ctx)
    found = await call("search_files", {"contains": "a{3}!"}, ctx)
    assert [r["path"] for r in found["results"]] == ["f.txt"]


async def test_json_validate_stops_a_catastrophic_pattern():
    evil = "a" * 34 + "!"
    t0 = time.process_time()  # CPU seconds, as the regex budget counts them
    with pytest.raises(ToolNotAllowedError, match="took longer than"):
        await call(
            "json_validate",
            {"data": evil, "json_schema": {"pattern": "^(a|a)+$"}},
            bound_s=SLOW_BOUND_S,
        )
    with pytest.raises(ToolNotAllowedError, match="took longer than"):
        await call(
            "json_validate",
            {"data": {evil: 1}, "json_schema": {"patternProperties": {"^(a|a)+$": {}},
                                                "additionalProperties": False}},
            bound_s=SLOW_BOUND_S,
        )  # fmt: skip
    assert time.process_time() - t0 < 20.0
    r = await call(
        "json_validate",
        {"data": {"id": "x-1", "zz": 2}, "json_schema": {
            "properties": {"id": {"pattern": "^[a-z]-[0-9]$"}},
            "patternProperties": {"^z": {"type": "string"}}, "additionalProperties": False}},
    )  # fmt: skip
    assert [e["path"] for e in r["errors"]] == ["/zz"]


async def test_regex_extract_stops_a_catastrophic_pattern():
    with pytest.raises(ToolNotAllowedError, match="took longer than"):
        await call(
            "regex_extract",
            {"pattern": "^(a|a)+$", "text": "a" * 34 + "!"},
            bound_s=SLOW_BOUND_S,
        )


async def test_sql_query_stops_an_endless_recursive_cte(ws: Path):
    sqlite3.connect(ws / "d.db").execute("CREATE TABLE t (x)").connection.commit()
    ctx = ToolContext(workspace=str(ws), settings={"sql": {"timeout_s": 1}})
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    t0 = time.process_time()  # the CTE runs in this process; endless without the bound
    with pytest.raises(ToolNotAllowedError, match="longer than 1 s"):
        await call("sql_query", {"database": "d.db", "query": endless + "SELECT count(*) FROM c"},
                   ctx)  # fmt: skip
    assert time.process_time() - t0 < 5.0
    r = await call("sql_query", {"database": "d.db", "query": endless + "SELECT x FROM c",
                                 "max_rows": 5}, ctx)  # fmt: skip
    assert r["rows"] == [[1], [2], [3], [4], [5]] and r["truncated"] is True
    with pytest.raises(ToolNotAllowedError, match="too big"):
        await call("sql_query", {"database": "d.db", "query": "SELECT zeroblob(100000000)"}, ctx)


async def test_shell_timeout_kills_children_started_with_setsid(ws: Path):
    cmd = "setsid sh -c 'echo $$ > escaped.pid; exec sleep 60' & echo started; sleep 60"
    t0 = time.monotonic()
    r = await call("shell", {"command": cmd, "timeout_s": 1}, sandbox(ws))
    assert time.monotonic() - t0 < 30.0  # not the 60 s it would hang (a loaded box is slow)
    assert r["timed_out"] is True and r["stdout"] == "started\n"
    escaped = int((ws / "escaped.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(escaped, 0)  # killed and reaped, not left running


async def test_python_exec_timeout_kills_a_detached_grandchild(ws: Path):
    code = (
        "import os, subprocess, time\n"
        "p = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "open('child.pid', 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    t0 = time.monotonic()
    r = await call("python_exec", {"code": code, "timeout_s": 1}, sandbox(ws))
    assert time.monotonic() - t0 < 30.0 and r["timed_out"] is True  # not the 60 s sleep
    with pytest.raises(ProcessLookupError):
        os.kill(int((ws / "child.pid").read_text()), 0)


async def test_background_processes_do_not_outlive_a_finished_command(ws: Path):
    r = await call("shell", {"command": "setsid sleep 60 & echo $! > bg.pid; echo done"},
                   sandbox(ws))  # fmt: skip
    assert r["exit_code"] == 0 and r["stdout"] == "done\n" and r["timed_out"] is False
    with pytest.raises(ProcessLookupError):
        os.kill(int((ws / "bg.pid").read_text()), 0)


async def test_shell_output_is_capped_while_it_is_read(ws: Path):
    # Peak of what Python allocated during the call, in every thread (the process's
    # max RSS is a high-water mark: an earlier test's peak could hide a buffered 300 MB).
    tracemalloc.start()
    try:
        r = await call(
            "shell", {"command": "head -c 300000000 /dev/zero; echo end >&2", "timeout_s": 30},
            sandbox(ws, max_output_bytes=1000), bound_s=40,
        )  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r["exit_code"] == 0 and r["truncated"] is True
    assert len(r["stdout"]) == 1000 and r["stderr"] == "end\n"
    assert peak < 100_000_000  # 300 MB of output never sat in this process


async def test_unavailable_isolation_is_refused_with_what_is_available(ws: Path):
    with pytest.raises(ToolNotAllowedError, match="not available"):
        await call("shell", {"command": "true"}, sandbox(ws, isolation="nonexistent"))


@pytest.mark.skipif(
    "bubblewrap" not in available_isolation(), reason="bwrap missing or user namespaces off"
)
async def test_bubblewrap_sandbox_has_no_network_and_a_read_only_host(ws: Path):
    outside = Path(f"/var/tmp/lumos-bwrap-probe-{os.getpid()}")
    cmd = (
        f"echo in > inside.txt; echo out > {outside} 2>/dev/null || echo ro; "
        "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 80), 2)' "
        "2>/dev/null || echo nonet"
    )
    r = await call("shell", {"command": cmd}, sandbox(ws, isolation="bubblewrap"))
    assert r["isolation"] == "bubblewrap"
    assert r["stdout"].split() == ["ro", "nonet"]
    assert (ws / "inside.txt").read_text() == "in\n" and not outside.exists()


async def test_a_sync_tool_that_ignores_its_timeout_is_stopped():
    import threading

    from lumos_ray.tools._api import tool

    state = {"ended": threading.Event(), "loops": 0}

    @tool
    def spin() -> str:
        """Loop forever in Python code, ignoring any timeout."""
        try:
            while True:
                state["loops"] += 1
        finally:
            state["ended"].set()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(spin.acall({}), 0.5)
    # The caller gave up: the thread is interrupted, not left spinning.
    assert await asyncio.to_thread(state["ended"].wait, 10)


async def test_runs_get_private_workspaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    a = ToolContext(run_id="run-a", tenant="acme").workspace_root()
    b = ToolContext(run_id="run-b", tenant="acme").workspace_root()
    evil = ToolContext(run_id="../../escape", tenant="../x").workspace_root()
    assert a == tmp_path / "workspaces" / "acme" / "run-a" and a != b
    assert evil.is_relative_to(tmp_path / "workspaces")
    assert (a.stat().st_mode & 0o777) == 0o700
    assert ((tmp_path / "workspaces").stat().st_mode & 0o777) == 0o700
    in_a = ToolContext(run_id="run-a", tenant="acme")
    await call("write_file", {"path": "x.txt", "content": "a"}, in_a)
    assert (a / "x.txt").read_text() == "a" and not (b / "x.txt").exists()


async def test_convert_format_refuses_deep_nesting_before_building_it():
    for fmt, depth in (("yaml", 150), ("json", 100_000)):
        deep = "[" * depth + "]" * depth
        with pytest.raises(ToolNotAllowedError, match="nested"):
            await call("convert_format", {"content": deep, "from_format": fmt, "to_format": "json"})


def test_lumos_tools_call_refuses_the_huge_power_before_computing_it(tmp_path: Path):
    """The issue's command, `lumos tools call calculator --args
    '{"expression":"(9**9999)**3000"}'`, as a process: a LUMOS-E022 error saying it was
    refused before the power was computed (it used to compute for ~45 s first)."""
    import subprocess
    import sys

    args = '{"expression":"(9**9999)**3000"}'
    r = subprocess.run(
        [sys.executable, "-c", "from lumos_ray.cli import main; main()",
         "tools", "call", "calculator", "--args", args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "LUMOS_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "LUMOS-E022" in r.stderr and "refused before computing" in r.stderr
    assert "Traceback" not in r.stderr


async def test_http_get_timeout_bounds_the_whole_exchange_not_each_read():
    """A server that sends one byte every 0.2 s never trips a per-read timeout: the
    call's timeout_s must still end it (before: it read for as long as the server
    dripped, here 60 s)."""
    import socket
    import threading

    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n")
            for _ in range(300):
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    threading.Thread(target=drip, daemon=True).start()
    ctx = ToolContext(settings={"http": {"allow_private": True}})
    try:
        with pytest.raises(ToolError, match="whole exchange"):
            await call(
                "http_get",
                {"url": f"http://127.0.0.1:{srv.getsockname()[1]}/", "timeout_s": 1},
                ctx,
                bound_s=30,
            )
    finally:
        stop.set()
        srv.close()


async def test_csv_stats_bounds_columns_cells_characters_and_lines(ws: Path):
    """csv_stats keeps the cells it reads: a table from the workspace is read only up to
    its cell and character budgets, profiles at most 1,000 columns, shows long values
    cut short, and refuses a line of millions of fields (each of these used to be read,
    kept and returned whole)."""
    import json

    ctx = ToolContext(workspace=str(ws))
    (ws / "wide.csv").write_text(
        ",".join(f"c{i}" for i in range(1500)) + "\n" + ",".join(["1"] * 1500) + "\n"
    )
    r = await call("csv_stats", {"path": "wide.csv"}, ctx, bound_s=SLOW_BOUND_S)
    assert len(r["columns"]) == 1000 and r["columns_truncated"] is True

    (ws / "tall.csv").write_text(
        ",".join(f"c{i}" for i in range(100)) + "\n" + (",".join(["1"] * 100) + "\n") * 12_000
    )
    r = await call("csv_stats", {"path": "tall.csv", "max_rows": 10**9}, ctx, bound_s=SLOW_BOUND_S)
    assert r["rows"] == 10_000 and r["truncated"] is True  # 1,000,000 cells
    assert r["columns"]["c0"]["count"] == 10_000

    row = ",".join(["x" * 90_000] * 10) + "\n"
    (ws / "heavy.csv").write_text(",".join(f"h{i}" for i in range(10)) + "\n" + row * 12)
    r = await call("csv_stats", {"path": "heavy.csv"}, ctx, bound_s=SLOW_BOUND_S)
    assert r["rows"] == 11 and r["truncated"] is True  # 10 million characters
    assert len(json.dumps(r)) < 10_000  # values shown cut to 200 characters

    (ws / "one-line.csv").write_text("a," * 600_000 + "a\n")
    with pytest.raises(ToolNotAllowedError, match="line longer than"):
        await call("csv_stats", {"path": "one-line.csv"}, ctx, bound_s=SLOW_BOUND_S)


async def test_list_dir_and_search_files_return_at_most_10000_entries(ws: Path):
    """What a call asks for is capped: a tree of 10,050 files listed "in full" (a model
    asking max_entries=10**9) returns 10,000 entries, marked truncated."""
    for i in range(10_050):
        (ws / f"f{i}.txt").touch()
    ctx = ToolContext(workspace=str(ws))
    r = await call("list_dir", {"max_entries": 10**9}, ctx, bound_s=SLOW_BOUND_S)
    assert len(r["entries"]) == 10_000 and r["truncated"] is True
    r = await call(
        "search_files", {"pattern": "*.txt", "max_results": 10**9}, ctx, bound_s=SLOW_BOUND_S
    )
    assert len(r["results"]) == 10_000 and r["truncated"] is True


async def test_regex_extract_returns_at_most_10000_matches():
    r = await call("regex_extract", {"pattern": "a", "text": "a" * 20_000, "max_matches": 10**9})
    assert len(r["matches"]) == 10_000 and r["truncated"] is True


async def test_direct_turns_of_two_tenants_do_not_share_a_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Outside a run (a direct agent turn: no run id) each tenant has its own folder;
    tenant "default" and tenant-less calls keep $LUMOS_HOME/workspace."""
    monkeypatch.setenv("LUMOS_HOME", str(tmp_path))
    acme, globex = ToolContext(tenant="acme"), ToolContext(tenant="globex")
    await call("write_file", {"path": "plan.txt", "content": "acme only"}, acme)
    with pytest.raises(ToolError, match="no such file in the workspace"):
        await call("read_file", {"path": "plan.txt"}, globex)
    root = acme.workspace_root()
    assert root == tmp_path / "workspaces" / "acme" / ".direct"
    assert (root.stat().st_mode & 0o777) == 0o700
    assert ToolContext(tenant="default").workspace_root() == tmp_path / "workspace"
    assert ToolContext().workspace_root() == tmp_path / "workspace"
