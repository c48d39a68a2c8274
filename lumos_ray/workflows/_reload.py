"""Hot reload for ``lumos dev``: new code and workflow versions reach the cluster
without a restart, a broken save never replaces what serves, running threads stay.

How new code reaches the processes that run it
----------------------------------------------
Workflows are data (import paths, never code) and every piece of user code is
imported by a long-lived process: the tenant's runner actor (function steps, tools by
path, Python workflows), the agent actors it creates (tools), and the Ray workers that
run steps as tasks. Python caches a module per process, so "the next run uses the new
code" needs each of them to see the new files. What ``lumos dev`` does, and why:

1. **A snapshot per code version.** Each good state of the project's Python files is
   copied to ``$LUMOS_HOME/dev/snapshots/<hash>/`` (content-addressed). Processes import the
   snapshot, never the working tree: a file saved half-written, or with a syntax error,
   is never imported by anything that serves; a process that starts later (a restarted
   runner, a new task worker) imports the same good version as the others.
2. **A runner per version (Ray runtime_env).** The runner is replaced (killed, then
   created again under its name) with ``PYTHONPATH`` = the new snapshot in its
   ``runtime_env``. Its tasks inherit that runtime_env, and Ray keeps one worker pool
   per runtime_env, so no step of the new version runs in a worker that imported an
   old one. This is correct by construction (fresh interpreters, no ``importlib.reload``
   with its stale references from ``from x import y``, classes of two generations,
   module state run twice) and it costs one process start (about a second), not a
   cluster restart. Runs are durable: one in flight on the old runner is adopted by
   the new one when its lease lapses (about 10 s) and goes on from its last
   checkpoint, with the new code.
3. **Code by value to the agent actors.** Agent actors hold threads (conversations)
   in memory and may be mid-turn; killing them would cut those turns. Instead the
   snapshot's modules are pickled *by value* in the new runner (each snapshot module
   ends with a line that calls :func:`lumos_ray.runtime.pickle_by_value` when
   ``LUMOS_DEV_BY_VALUE=1``, set only in the runner's runtime_env): an agent spec's
   tools then carry their code, the spec's fingerprint changes with the code, and the
   existing "changed spec" path hands the running actor the new spec in place
   (``AgentActor.reconfigure``): same process, same threads; turns already running
   finish with the tools they started with.

Workflow YAML is validated in the watcher (``file:line``), then copied to a staging
directory that the dev gateway reads (``LUMOS_WORKFLOWS_DIR``), and its new version is
registered in the store. A file that fails validation is not staged: the last good
copy keeps serving. Python workflows found at module top level are staged and
registered the same way (as JSON, which is YAML).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lumos_ray._files import private_dir, write_private_text
from lumos_ray.errors import LumosError
from lumos_ray.workflows._reload_changes import (
    WORKFLOWS_DIR,
    ChangeSet,
    Problem,
    problem_from_message,
    project_files,
    refs_in_body,
    syntax_problems,
)

__all__ = [
    "BY_VALUE_ENV",
    "STATUS_FILE",
    "DevReloader",
    "ReloadResult",
    "Snapshot",
    "build_snapshot",
    "write_status",
]

STATUS_FILE = "dev-status.json"
BY_VALUE_ENV = "LUMOS_DEV_BY_VALUE"
KEEP_SNAPSHOTS = 4  # old code versions kept on disk (a run in flight may still need one)
CHECK_TIMEOUT_S = 60.0  # importing the project in the check process
RUNNER_START_TIMEOUT_S = 120.0
# Appended to each module of a snapshot (one line: the user's line numbers stay).
_TRAILER = (
    '\nif __import__("os").environ.get("' + BY_VALUE_ENV + '") == "1": '
    '__import__("lumos_ray.runtime", fromlist=["pickle_by_value"]).pickle_by_value(__name__)\n'
)


@dataclass(frozen=True)
class Snapshot:
    version: str
    path: Path


@dataclass
class ReloadResult:
    """What one reload did (printed by the CLI, timed by the benchmark)."""

    ok: bool
    problems: list[Problem] = field(default_factory=list)
    code_version: str | None = None
    code_reloaded: bool = False
    workflows: dict[str, str] = field(default_factory=dict)  # name -> version (new ones)
    seconds: float = 0.0
    check_s: float = 0.0  # importing the new code in the check process
    runner_s: float = 0.0  # replacing the runner


def write_status(home: Path, problems: list[Problem]) -> dict[str, Any]:
    """``$LUMOS_HOME/dev-status.json``, atomically (temp file + rename, 0600): the
    dashboard reads it while it is being replaced."""
    status = {
        "ok": not problems,
        "errors": [p.to_dict() for p in problems],
        "reloaded_at": datetime.now(UTC).isoformat(),
    }
    write_private_text(home / STATUS_FILE, json.dumps(status, indent=2))
    return status


def build_snapshot(project: Path, files: list[Path], code_root: Path) -> Snapshot:
    """Copy ``files`` (the project's Python files) to ``code_root/<content hash>``,
    each with the by-value trailer. Same content, same directory (reused)."""
    digest = hashlib.sha256()
    contents: list[tuple[str, bytes]] = []
    for f in files:
        rel = f.resolve().relative_to(project.resolve()).as_posix()
        data = f.read_bytes()
        contents.append((rel, data))
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    version = digest.hexdigest()[:16]
    target = code_root / version
    if not target.is_dir():
        private_dir(code_root)
        tmp = code_root / f".{version}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for rel, data in contents:
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data + _TRAILER.encode())
        tmp.mkdir(parents=True, exist_ok=True)  # a project without Python files
        try:
            os.replace(tmp, target)
        except OSError:  # another process made the same version first
            shutil.rmtree(tmp, ignore_errors=True)
    os.utime(target)  # newest first when pruning
    return Snapshot(version, target)


def _prune(code_root: Path, keep: set[str]) -> None:
    dirs = sorted(
        (d for d in code_root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    for d in dirs[KEEP_SNAPSHOTS:]:
        if d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def _run_check(snapshot: Snapshot, project: Path) -> dict[str, Any]:
    """Import the snapshot in a fresh interpreter (``_reload_check``), bounded."""
    env = dict(os.environ)
    env.pop(BY_VALUE_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(snapshot.path), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lumos_ray.workflows._reload_check",
                str(snapshot.path),
                str(project),
            ],
            cwd=str(project),
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {
            "problems": [
                Problem(
                    ".",
                    1,
                    f"importing the project took over {CHECK_TIMEOUT_S:.0f} s "
                    "(a module that blocks at import?)",
                ).to_dict()
            ],
            "modules": {},
            "workflows": {},
        }
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:].strip()
        return {
            "problems": [Problem(".", 1, f"the import check failed: {tail}").to_dict()],
            "modules": {},
            "workflows": {},
        }
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def _ref_line(path: Path, ref: str) -> int:
    try:
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if ref in line:
                return i
    except OSError:
        pass
    return 1


class DevReloader:
    """The reload state of one ``lumos dev`` session: the code version that serves,
    the staged workflows, and what the last check found. ``reload`` takes a change set
    and applies what is good; ``full`` (the first load) takes every file."""

    def __init__(
        self,
        project: Path,
        home: Path,
        *,
        tenant: str,
        install_runner: bool = True,
    ) -> None:
        self.project = project.resolve()
        self.home = home.resolve()
        self.tenant = tenant
        self.install_runner = install_runner
        self.dev_dir = private_dir(self.home / "dev")
        self.code_root = self.dev_dir / "snapshots"
        self.staging = private_dir(self.dev_dir / "workflows")
        self.code: Snapshot | None = None  # the version that serves
        self.modules: dict[str, list[str]] = {}
        self.python_workflows: dict[str, dict[str, Any]] = {}
        self.code_problems: list[Problem] = []
        self.workflow_problems: dict[str, Problem] = {}
        self.versions: dict[str, str] = {}  # workflow name -> registered version
        self._python_staged: set[str] = set()
        self._python_problem_keys: set[str] = set()

    # -- public ----------------------------------------------------------------------
    def full(self) -> ReloadResult:
        py, yml = project_files(self.project)
        rels = {f.relative_to(self.project).as_posix() for f in py}
        wfs = {f.relative_to(self.project).as_posix() for f in yml}
        for stale in self.staging.glob("*"):  # a previous session's copies
            stale.unlink(missing_ok=True)
        return self.reload(ChangeSet(python=rels, workflows=wfs), force_code=True)

    def reload(self, changes: ChangeSet, *, force_code: bool = False) -> ReloadResult:
        t0 = time.perf_counter()
        result = ReloadResult(ok=True)
        code_changed = False
        if changes.python or force_code:
            code_changed = self._reload_code(result)
        # Workflows are validated against the code that serves; a code change can
        # break (or fix) a workflow that did not change.
        names = set(changes.workflows)
        if code_changed or force_code:
            names |= {
                f.relative_to(self.project).as_posix()
                for f in (self.project / WORKFLOWS_DIR).glob("*.y*ml")
            }
        for rel in sorted(names):
            self._reload_workflow(rel, result)
        self._stage_python_workflows(result)
        problems = self.problems()
        result.problems = problems
        result.ok = not problems
        result.code_version = self.code.version if self.code else None
        write_status(self.home, problems)
        result.seconds = time.perf_counter() - t0
        return result

    def problems(self) -> list[Problem]:
        return [*self.code_problems, *self.workflow_problems.values()]

    # -- code ------------------------------------------------------------------------
    def _reload_code(self, result: ReloadResult) -> bool:
        """Check the project's Python files; when good and different from what serves,
        make them the serving version. Returns whether the serving version changed."""
        py, _ = project_files(self.project)
        problems = syntax_problems(self.project, py)
        if problems:
            self.code_problems = problems
            return False
        snap = build_snapshot(self.project, py, self.code_root)
        if self.code is not None and snap.version == self.code.version:
            self.code_problems = []
            return False
        t0 = time.perf_counter()
        found = _run_check(snap, self.project)
        result.check_s = time.perf_counter() - t0
        problems = [Problem(**p) for p in found["problems"]]
        if problems:
            self.code_problems = problems
            return False
        if self.install_runner:
            result.runner_s = install_runner(snap, self.project, self.tenant)
        self.code = snap
        self.code_problems = []
        self.modules = found["modules"]
        self.python_workflows = found["workflows"]
        result.code_reloaded = True
        _prune(self.code_root, {snap.version})
        return True

    # -- workflows -------------------------------------------------------------------
    def _reload_workflow(self, rel: str, result: ReloadResult) -> None:
        from lumos_ray.workflows._definition import load_workflow
        from lumos_ray.workflows._runs import _as_data

        path = self.project / rel
        staged = self.staging / Path(rel).name
        self.workflow_problems.pop(rel, None)
        if not path.is_file():  # deleted: stop serving it
            staged.unlink(missing_ok=True)
            return
        try:
            wf = load_workflow(path)
            body, version = _as_data(wf)
        except LumosError as exc:
            self.workflow_problems[rel] = problem_from_message(exc.message, self.project, path)
            return
        except Exception as exc:  # a validator's own error, still shown
            self.workflow_problems[rel] = Problem(rel, 1, f"{type(exc).__name__}: {exc}")
            return
        bad = self._unresolved(body)
        if bad:
            self.workflow_problems[rel] = Problem(rel, _ref_line(path, bad[0]), bad[1])
            return
        shutil.copyfile(path, staged)
        self._register(wf.name, version, body, result)

    def _unresolved(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """(ref, message) for the first ``module:attr`` that the serving code lacks
        (project modules, from the last check) or that cannot be found (others)."""
        import importlib.util

        for ref in refs_in_body(body):
            mod, _, attr = ref.partition(":")
            top = attr.split(".")[0]
            if mod in self.modules:
                if top not in self.modules[mod]:
                    return ref, f"{ref}: module {mod!r} has no attribute {top!r}"
                continue
            try:
                spec = importlib.util.find_spec(mod)
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                return ref, f"{ref}: no module named {mod!r} in the project or installed"
        return None

    def _stage_python_workflows(self, result: ReloadResult) -> None:
        from lumos_ray.workflows._serialize import definition_version

        for key in self._python_problem_keys:
            self.workflow_problems.pop(key, None)
        self._python_problem_keys.clear()
        for gone in self._python_staged - set(self.python_workflows):
            (self.staging / f"{gone}.yaml").unlink(missing_ok=True)
        self._python_staged = set()
        for name, item in self.python_workflows.items():
            body = item["body"]
            twins = [
                f
                for ext in (".yaml", ".yml")
                if (f := self.project / WORKFLOWS_DIR / f"{name}{ext}").is_file()
            ]
            if twins:
                key = f"{item['file']}#{name}"
                self.workflow_problems[key] = Problem(
                    item["file"], 1, f"workflow {name!r} is also defined in {twins[0].name}"
                )
                self._python_problem_keys.add(key)
                continue
            self._python_staged.add(name)
            # JSON is YAML: the gateway loads it like the other staged files.
            write_private_text(self.staging / f"{name}.yaml", json.dumps(body, indent=1))
            self._register(name, definition_version(body), body, result)

    def _register(
        self, name: str, version: str, body: dict[str, Any], result: ReloadResult
    ) -> None:
        """Record the version in the store now (``lumos workflows list``, the
        dashboard); a run would register it too (same content hash)."""
        if self.versions.get(name) == version:
            return
        from lumos_ray.store import open_store

        open_store(tenant_id=self.tenant).put_definition("workflow", name, version, body)
        self.versions[name] = version
        result.workflows[name] = version


def runner_env(snapshot: Snapshot, project: Path) -> dict[str, str]:
    """The runner's env vars for one code version: the snapshot first on PYTHONPATH,
    the working tree not at all (only checked code is imported)."""
    from lumos_ray.runtime import current_settings

    skip = {str(project), os.getcwd(), ""}
    paths = [snapshot.path.as_posix()] + [
        p for p in sys.path if p not in skip and os.path.isdir(p) and not p.startswith(str(project))
    ]
    return {
        **current_settings().to_env(),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)),
        BY_VALUE_ENV: "1",
        "LUMOS_DEV_CODE_VERSION": snapshot.version,
    }


def install_runner(snapshot: Snapshot, project: Path, tenant: str) -> float:
    """Replace ``tenant``'s runner with one that imports ``snapshot``; returns the
    seconds it took (the new runner answers when this returns)."""
    from lumos_ray import runtime
    from lumos_ray.errors import ConnectionFailedError
    from lumos_ray.workflows._runner import Runner, runner_name

    t0 = time.perf_counter()
    name = runner_name(tenant)
    deadline = time.monotonic() + RUNNER_START_TIMEOUT_S
    old = runtime.get_actor(name)
    if old is not None:
        runtime.kill_actor(old, no_restart=True)
        while runtime.get_actor(name) is not None:  # the name is free once it is dead
            if time.monotonic() > deadline:
                raise ConnectionFailedError(
                    f"The runner {name} did not stop within {RUNNER_START_TIMEOUT_S:.0f} s.",
                    fix="Check the cluster (`lumos status`); restart lumos dev.",
                )
            time.sleep(0.05)
    actor = runtime.get_or_create_actor(
        name,
        runtime.remote_class(Runner),
        not runtime.current_settings().embedded,
        tenant,
        options={
            "num_cpus": 0,
            "max_restarts": -1,
            "max_task_retries": -1,
            "max_concurrency": 10_000,
            "runtime_env": {"env_vars": runner_env(snapshot, project)},
        },
    )
    runtime.get_refs(actor.ping.remote(), timeout_s=RUNNER_START_TIMEOUT_S)
    return time.perf_counter() - t0


def stop_runner(tenant: str) -> None:
    """Kill the runner this session installed (the next client creates a plain one)."""
    from lumos_ray import runtime
    from lumos_ray.workflows._runner import runner_name

    runtime.kill_actor(runner_name(tenant), no_restart=True)
