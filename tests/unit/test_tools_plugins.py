"""Plugin discovery through a real installed distribution (a dist-info directory with
entry_points.txt on sys.path, read by importlib.metadata), and `lumos tools` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from lumos_ray.tools._api import get_tool, list_tools, register_tool, tool

PLUGIN_MODULES = ("lumos_demo_plugin", "broken_plugin_mod")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    pkg = site / "lumos_demo_plugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from lumos_ray.tools._api import tool

            @tool
            def greet(name: str, excited: bool = False) -> str:
                """Greet someone by name.

                Args:
                    name: Who to greet.
                    excited: Add an exclamation mark.
                """
                return f"Hello, {name}{'!' if excited else '.'}"

            def shout(text: str) -> str:
                """Upper-case a text."""
                return text.upper()

            @tool(name="calculator")
            def fake_calculator(expression: str) -> str:
                """A plugin trying to take a built-in's name."""
                return "plugin"

            MORE = [shout, fake_calculator]
            '''
        )
    )
    (site / "broken_plugin_mod.py").write_text("raise ImportError('missing dependency foo')\n")
    dist = site / "lumos_demo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lumos-demo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[lumos_ray.tools]\n"
        "greet = lumos_demo_plugin:greet\n"
        "more = lumos_demo_plugin:MORE\n"
        "broken = broken_plugin_mod:TOOL\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    for mod in PLUGIN_MODULES:
        sys.modules.pop(mod, None)


def test_plugins_are_listed_and_a_broken_one_is_reported_by_name(plugin_site):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tools = {t.name: t for t in list_tools()}
    assert tools["greet"].source == "plugin" and tools["shout"].source == "plugin"
    assert tools["greet"].parameters["properties"]["name"]["description"] == "Who to greet."
    # a plugin cannot replace a built-in of the same name
    assert tools["calculator"].source == "builtin"
    msgs = [str(w.message) for w in caught]
    assert any("'broken'" in m and "missing dependency foo" in m for m in msgs), msgs


async def test_plugin_tools_resolve_by_name_and_run(plugin_site):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        greet = get_tool("greet")
        shout = get_tool("shout")
    assert await greet.acall({"name": "Ada", "excited": True}) == "Hello, Ada!"
    assert await shout.acall({"text": "hi"}) == "HI"


def test_registered_tools_shadow_plugins(plugin_site):
    from lumos_ray.tools import _registry as _tool_registry

    @tool(name="greet")
    def local_greet(name: str) -> str:
        """Local override."""
        return "local"

    register_tool(local_greet)
    try:
        assert get_tool("greet") is local_greet
    finally:
        _tool_registry.unregister("greet")


def test_without_the_dist_the_plugin_is_unknown():
    from lumos_ray.errors import NotFoundError

    with pytest.raises(NotFoundError):
        get_tool("greet")


def _lumos(*args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, root) if p)
    return subprocess.run(
        [sys.executable, "-c", "from lumos_ray.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_tools_list_json_and_human(plugin_site):
    r = _lumos("tools", "list", "--json", pythonpath=str(plugin_site))
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["greet"]["source"] == "plugin"
    assert rows["calculator"] == {
        **rows["calculator"],
        "category": "math",
        "source": "builtin",
    }
    assert len([r for r in rows.values() if r["source"] == "builtin"]) >= 12
    assert "'broken'" in r.stderr  # reported, not fatal


def test_cli_human_list_and_call_in_process():
    from click.testing import CliRunner

    from lumos_ray.cli import _load_commands, cli

    _load_commands()
    runner = CliRunner()
    human = runner.invoke(cli, ["tools", "list", "--category", "file"])
    assert human.exit_code == 0, human.output
    assert "read_file" in human.output and "calculator" not in human.output
    ok = runner.invoke(
        cli, ["tools", "call", "calculator", "--args", '{"expression": "6*7"}', "--json"]
    )
    assert ok.exit_code == 0 and json.loads(ok.output)["result"] == 42
    shown = runner.invoke(cli, ["tools", "show", "read_file"])
    assert shown.exit_code == 0 and '"path"' in shown.output


def test_cli_errors_are_a_message_and_a_fix_not_a_traceback():
    r = _lumos("tools", "show", "calculatr")
    assert r.returncode == 1
    assert "LUMOS-E003" in r.stderr and "Did you mean: calculator" in r.stderr
    assert "How to fix" in r.stderr and "Traceback" not in r.stderr
