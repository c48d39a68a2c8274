"""`lumos dev` without Ray: which changes count, how a burst becomes one reload, how
errors become file:line, what a snapshot holds, what the status file says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lumos_ray.errors import ConfigError
from lumos_ray.workflows import _reload_changes as rc
from lumos_ray.workflows._reload import (
    BY_VALUE_ENV,
    STATUS_FILE,
    DevReloader,
    build_snapshot,
    write_status,
)
from lumos_ray.workflows._reload_changes import ChangeSet, Debouncer, Problem


def _project(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    (p / "configs/workflows").mkdir(parents=True)
    (p / "pkg").mkdir()
    (p / "tools.py").write_text("def f(state):\n    return 1\n")
    (p / "pkg/__init__.py").write_text("")
    (p / "pkg/mod.py").write_text("X = 1\n")
    (p / "configs/workflows/a.yaml").write_text("name: a\nsteps:\n  - {id: s, function: tools:f}\n")
    return p


# -- classification ---------------------------------------------------------------------
def test_classify_keeps_python_and_workflow_yaml_and_drops_the_rest(tmp_path):
    p = _project(tmp_path)
    changes = [
        (1, str(p / "tools.py")),
        (2, str(p / "pkg/mod.py")),
        (3, str(p / "configs/workflows/a.yaml")),
        (2, str(p / "configs/workflows/b.yml")),
        (2, str(p / "configs/serve/x.yaml")),  # not a workflow dir
        (2, str(p / "data.csv")),
        (2, str(p / ".lumos/runs.db")),
        (2, str(p / ".lumos/ray/session/x.py")),  # state dir, however named inside
        (2, str(p / ".venv/lib/site.py")),
        (2, str(p / "pkg/__pycache__/mod.cpython-311.pyc")),
        (2, str(p / ".tools.py.swp")),
        (2, str(tmp_path / "elsewhere.py")),  # outside the project
    ]
    got = rc.classify(p, changes)
    assert got.python == {"tools.py", "pkg/mod.py"}
    assert got.workflows == {"configs/workflows/a.yaml", "configs/workflows/b.yml"}


def test_an_empty_change_set_is_false_and_merge_unions():
    a, b = ChangeSet(python={"x.py"}), ChangeSet(workflows={"configs/workflows/w.yaml"})
    assert not ChangeSet()
    a.merge(b)
    assert a.python == {"x.py"} and a.workflows == {"configs/workflows/w.yaml"}


# -- debounce --------------------------------------------------------------------------
def test_debounce_waits_for_quiet_then_gives_one_merged_batch():
    d = Debouncer(quiet_s=0.3, max_wait_s=2.0)
    assert not d.due(0.0)
    d.add(ChangeSet(python={"a.py"}), 10.0)
    d.add(ChangeSet(python={"a.py"}), 10.1)  # the editor's second write
    d.add(ChangeSet(workflows={"configs/workflows/w.yaml"}), 10.2)
    assert not d.due(10.4)  # 0.2 s since the last change
    assert d.due(10.5)
    batch = d.take()
    assert batch.python == {"a.py"} and batch.workflows == {"configs/workflows/w.yaml"}
    assert not d.due(100.0)  # nothing pending after take


def test_debounce_reloads_within_max_wait_under_a_steady_stream():
    d = Debouncer(quiet_s=0.3, max_wait_s=1.0)
    t = 0.0
    while not d.due(t):
        d.add(ChangeSet(python={"a.py"}), t)
        t += 0.1
        assert t < 5, "a steady stream of writes never reloaded"
    assert 0.9 <= t <= 1.1


def test_debounce_ignores_empty_batches_and_rejects_bad_bounds():
    d = Debouncer()
    d.add(ChangeSet(), 1.0)
    assert not d.due(50.0)
    with pytest.raises(ConfigError, match="out of range"):
        Debouncer(quiet_s=0)
    with pytest.raises(ConfigError, match="out of range"):
        Debouncer(quiet_s=5, max_wait_s=1)


# -- errors as file:line ------------------------------------------------------------------
def test_syntax_errors_are_found_by_compiling_with_file_and_line(tmp_path):
    p = _project(tmp_path)
    (p / "pkg/mod.py").write_text("X = 1\ndef broken(:\n    pass\n")
    (p / "tools.py").write_text("import sys\nsys.exit(3)\n")  # never executed by a check
    probs = rc.syntax_problems(p, [p / "tools.py", p / "pkg/mod.py"])
    assert [(x.file, x.line) for x in probs] == [("pkg/mod.py", 2)]
    assert probs[0].message.startswith("SyntaxError:")
    assert str(probs[0]).startswith("pkg/mod.py:2: SyntaxError")


def test_an_exception_points_at_the_innermost_project_frame(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir()
    src = snap / "helpers.py"
    src.write_text("def boom():\n    x = 1\n    raise ValueError('bad value')\n")
    code = compile(src.read_text(), str(src), "exec")
    ns: dict = {}
    exec(code, ns)
    try:
        ns["boom"]()
    except ValueError as exc:
        prob = rc.problem_from_exception(exc, tmp_path / "proj", snap / "tools.py", snap)
    assert (prob.file, prob.line) == ("helpers.py", 3)
    assert prob.message == "ValueError: bad value"


def test_a_syntax_error_raised_at_import_keeps_its_own_line(tmp_path):
    snap = tmp_path / "snap"
    snap.mkdir()
    try:
        compile("a = (\n", str(snap / "pkg/m.py"), "exec")
    except SyntaxError as exc:
        prob = rc.problem_from_exception(exc, tmp_path / "proj", snap / "x.py", snap)
    assert prob.file == "pkg/m.py" and prob.line == 1


def test_path_line_messages_are_parsed_and_others_point_at_the_file(tmp_path):
    p = tmp_path
    got = rc.problem_from_message(f"{p}/configs/workflows/w.yaml:7: steps.0: bad", p, p / "x")
    assert got == Problem("configs/workflows/w.yaml", 7, "steps.0: bad")
    other = rc.problem_from_message("something else", p, p / "configs/workflows/w.yaml")
    assert other == Problem("configs/workflows/w.yaml", 1, "something else")


def test_refs_in_body_finds_functions_and_tools_by_path_at_any_depth():
    body = {
        "agents": [{"name": "a", "tools": ["calculator", "tools:stamp", {"function": "m:f"}]}],
        "steps": [
            {"id": "s", "function": "tools:mark"},
            {"parallel": [{"id": "t", "agent": {"name": "b", "tools": ["pkg.mod:t"]}}]},
            {"id": "u", "tool": "calculator", "args": {"function": "not a ref"}},
        ],
    }
    assert rc.refs_in_body(body) == ["tools:stamp", "m:f", "tools:mark", "pkg.mod:t"]


# -- bounds ----------------------------------------------------------------------------
def test_project_files_are_bounded(tmp_path, monkeypatch):
    p = _project(tmp_path)
    py, yml = rc.project_files(p)
    assert [f.name for f in py] == ["__init__.py", "mod.py", "tools.py"]
    assert [f.name for f in yml] == ["a.yaml"]
    (p / "big.py").write_bytes(b"#" * (rc.MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError, match=r"big\.py"):
        rc.project_files(p)
    (p / "big.py").unlink()
    monkeypatch.setattr(rc, "MAX_FILES", 3)
    with pytest.raises(ConfigError, match="more than 3"):
        rc.project_files(p)


def test_module_names():
    assert rc.module_name(Path("tools.py")) == "tools"
    assert rc.module_name(Path("pkg/__init__.py")) == "pkg"
    assert rc.module_name(Path("pkg/mod.py")) == "pkg.mod"
    assert rc.module_name(Path("my-scripts/x.py")) is None


# -- snapshots, the import check, the status file ----------------------------------------
def test_snapshots_are_content_addressed_and_keep_line_numbers(tmp_path):
    p = _project(tmp_path)
    py, _ = rc.project_files(p)
    a = build_snapshot(p, py, tmp_path / "snaps")
    again = build_snapshot(p, py, tmp_path / "snaps")
    assert again == a
    copy = (a.path / "tools.py").read_text()
    assert copy.startswith("def f(state):\n    return 1\n")
    assert BY_VALUE_ENV in copy.splitlines()[-1]  # one line, appended
    (p / "tools.py").write_text("def f(state):\n    return 2\n")
    b = build_snapshot(p, rc.project_files(p)[0], tmp_path / "snaps")
    assert b.version != a.version and (a.path / "tools.py").read_text() == copy


def test_the_check_process_reports_import_errors_in_project_terms(tmp_path):
    p = _project(tmp_path)
    (p / "pkg/mod.py").write_text("X = 1\nY = undefined_name\n")
    snap = build_snapshot(p, rc.project_files(p)[0], tmp_path / "snaps")
    env = {**os.environ, "PYTHONPATH": str(snap.path)}
    env.pop(BY_VALUE_ENV, None)
    proc = subprocess.run(
        [sys.executable, "-m", "lumos_ray.workflows._reload_check", str(snap.path), str(p)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["problems"] == [
        {
            "file": "pkg/mod.py",
            "line": 2,
            "message": "NameError: name 'undefined_name' is not defined",
        }
    ]
    assert "f" in out["modules"]["tools"]


def test_status_file_is_replaced_whole(tmp_path):
    write_status(tmp_path, [Problem("tools.py", 3, "SyntaxError: invalid syntax")])
    data = json.loads((tmp_path / STATUS_FILE).read_text())
    assert data["ok"] is False
    assert data["errors"] == [
        {"file": "tools.py", "line": 3, "message": "SyntaxError: invalid syntax"}
    ]
    assert data["reloaded_at"].endswith("+00:00")
    write_status(tmp_path, [])
    assert json.loads((tmp_path / STATUS_FILE).read_text())["ok"] is True
    assert oct((tmp_path / STATUS_FILE).stat().st_mode & 0o777) == "0o600"
    assert [f.name for f in tmp_path.iterdir()] == [STATUS_FILE]  # no temp file left


def test_a_bad_workflow_is_not_staged_and_the_good_copy_stays(tmp_path, monkeypatch):
    """Workflows only (no runner: that needs Ray); the store is a temp SQLite file."""
    p = _project(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("LUMOS_HOME", str(home))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path / 'runs.db'}")
    r = DevReloader(p, home, tenant="default", install_runner=False)
    first = r.full()
    assert first.ok, first.problems
    staged = r.staging / "a.yaml"
    good = staged.read_text()
    (p / "configs/workflows/a.yaml").write_text("name: a\nsteps:\n  - {id: s, functio: tools:f}\n")
    bad = r.reload(ChangeSet(workflows={"configs/workflows/a.yaml"}))
    assert not bad.ok
    assert bad.problems[0].file == "configs/workflows/a.yaml" and bad.problems[0].line == 3
    assert staged.read_text() == good
    (p / "configs/workflows/a.yaml").write_text("name: a\nsteps:\n  - {id: s, function: tools:g}\n")
    missing = r.reload(ChangeSet(workflows={"configs/workflows/a.yaml"}))
    assert [(x.file, x.line) for x in missing.problems] == [("configs/workflows/a.yaml", 3)]
    assert "has no attribute 'g'" in missing.problems[0].message
    (p / "configs/workflows/a.yaml").write_text(
        "name: a\nsteps:\n  - {id: s2, function: tools:f}\n"
    )
    fixed = r.reload(ChangeSet(workflows={"configs/workflows/a.yaml"}))
    assert fixed.ok and set(fixed.workflows) == {"a"}
    assert "s2" in staged.read_text()
    assert json.loads((home / STATUS_FILE).read_text())["ok"] is True


def test_python_workflows_are_found_staged_and_registered(tmp_path, monkeypatch):
    p = _project(tmp_path)
    (p / "flows.py").write_text(
        "import lumos_ray as lr\n\n"
        "pyflow = lr.Workflow(name='pyflow', steps=[lr.FunctionStep(id='s', function='tools:f')])\n"
    )
    home = tmp_path / "home"
    monkeypatch.setenv("LUMOS_HOME", str(home))
    monkeypatch.setenv("LUMOS_STORE_URL", f"sqlite:///{tmp_path / 'runs.db'}")
    r = DevReloader(p, home, tenant="default", install_runner=False)
    first = r.full()
    assert first.ok, first.problems
    assert set(first.workflows) == {"a", "pyflow"}
    staged = json.loads((r.staging / "pyflow.yaml").read_text())  # JSON is YAML
    assert staged["steps"][0]["function"] == "tools:f"
    from lumos_ray.store import open_store

    row = open_store(tenant_id="default").get_definition("workflow", "pyflow")
    assert row["version"] == first.workflows["pyflow"]
    # The same name in a YAML file too: an error, the YAML one serves.
    (p / "configs/workflows/pyflow.yaml").write_text(
        "name: pyflow\nsteps:\n  - {id: y, function: tools:f}\n"
    )
    (p / "flows.py").write_text((p / "flows.py").read_text() + "# touched\n")
    again = r.reload(ChangeSet(python={"flows.py"}, workflows={"configs/workflows/pyflow.yaml"}))
    assert [(x.file, x.line) for x in again.problems] == [("flows.py", 1)]
    assert "also defined in pyflow.yaml" in again.problems[0].message
    assert (r.staging / "pyflow.yaml").read_text().startswith("name: pyflow")
    # The YAML twin removed: the Python one serves again, the error is gone.
    (p / "configs/workflows/pyflow.yaml").unlink()
    back = r.reload(ChangeSet(workflows={"configs/workflows/pyflow.yaml"}))
    assert back.ok, back.problems
    assert json.loads((r.staging / "pyflow.yaml").read_text())["steps"][0]["id"] == "s"
