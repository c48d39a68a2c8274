"""What ``lumos dev`` watches, how a burst of file events becomes one reload, and how
an error becomes ``file:line: message``. Pure functions and small classes (no Ray, no
imports of the user's code), so they are unit-tested on their own.

A project is a directory with Python modules (tools, function steps, agents, Python
workflows) and YAML workflows in ``configs/workflows/``. Everything has a bound: the
number of files, the size of each, their total; a project past a bound is refused with
a message instead of a slow or unbounded watch.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumos_ray.errors import ConfigError

__all__ = [
    "MAX_FILES",
    "MAX_FILE_BYTES",
    "MAX_TOTAL_BYTES",
    "WORKFLOWS_DIR",
    "ChangeSet",
    "Debouncer",
    "Problem",
    "classify",
    "module_name",
    "problem_from_exception",
    "problem_from_message",
    "project_files",
    "refs_in_body",
    "syntax_problems",
]

WORKFLOWS_DIR = "configs/workflows"
MAX_FILES = 2_000  # Python and YAML files of one project
MAX_FILE_BYTES = 1_000_000  # one file: source code, not data
MAX_TOTAL_BYTES = 20_000_000
# Never project code: state, environments, caches, build output.
_SKIP_DIRS = frozenset(
    {"__pycache__", "node_modules", "venv", "env", "build", "dist", "site-packages"}
)
_PY = (".py",)
_YAML = (".yaml", ".yml")


@dataclass(frozen=True)
class Problem:
    """One error to show: in the terminal as ``file:line: message``, in
    ``dev-status.json`` as this dict (the dashboard's banner)."""

    file: str
    line: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _skipped(rel: Path) -> bool:
    return any(p.startswith(".") or p in _SKIP_DIRS for p in rel.parts[:-1])


def kind_of(project: Path, path: str | Path) -> str | None:
    """``"python"``, ``"workflow"`` or None (not watched) for a path in ``project``."""
    p = Path(path)
    try:
        rel = p.resolve().relative_to(project.resolve()) if p.is_absolute() else p
    except ValueError:
        return None
    if _skipped(rel) or rel.name.startswith("."):
        return None
    if rel.suffix in _PY:
        return "python"
    if rel.suffix in _YAML and rel.parent.as_posix() == WORKFLOWS_DIR:
        return "workflow"
    return None


@dataclass
class ChangeSet:
    """Changed project files by kind, as paths relative to the project."""

    python: set[str] = field(default_factory=set)
    workflows: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.python or self.workflows)

    def merge(self, other: ChangeSet) -> None:
        self.python |= other.python
        self.workflows |= other.workflows


def classify(project: Path, changes: Iterable[tuple[Any, str]]) -> ChangeSet:
    """Sort watchfiles' ``(Change, path)`` pairs into Python and workflow changes;
    anything else in the directory (data, logs, the store, editors' swap files) is
    ignored. Added, modified and deleted all count: each can change what serves."""
    out = ChangeSet()
    root = project.resolve()
    for _change, path in changes:
        kind = kind_of(root, path)
        if kind is None:
            continue
        p = Path(path)
        rel = (p.resolve().relative_to(root) if p.is_absolute() else p).as_posix()
        (out.python if kind == "python" else out.workflows).add(rel)
    return out


class Debouncer:
    """One reload per burst of saves: an editor writes a file in several events
    (truncate, write, rename), a formatter rewrites it again just after, a ``git
    checkout`` touches many files. Changes are collected until none came for
    ``quiet_s``, or ``max_wait_s`` after the first (a steady stream of writes still
    reloads). Times are passed in, so the policy is tested without sleeping."""

    def __init__(self, quiet_s: float = 0.3, max_wait_s: float = 2.0) -> None:
        if not 0 < quiet_s <= 10 or not quiet_s <= max_wait_s <= 60:
            raise ConfigError(
                f"debounce: quiet {quiet_s} s, max wait {max_wait_s} s are out of range",
                fix="Use 0 < quiet <= 10 s and quiet <= max wait <= 60 s.",
            )
        self.quiet_s, self.max_wait_s = quiet_s, max_wait_s
        self._pending = ChangeSet()
        self._first: float | None = None
        self._last: float | None = None

    def add(self, changes: ChangeSet, now: float) -> None:
        if not changes:
            return
        self._pending.merge(changes)
        self._first = now if self._first is None else self._first
        self._last = now

    def due(self, now: float) -> bool:
        if self._first is None or self._last is None:
            return False
        return now - self._last >= self.quiet_s or now - self._first >= self.max_wait_s

    def take(self) -> ChangeSet:
        out, self._pending = self._pending, ChangeSet()
        self._first = self._last = None
        return out


def project_files(project: Path) -> tuple[list[Path], list[Path]]:
    """(Python files, workflow YAML files) of the project, sorted, within the bounds."""
    root = project.resolve()
    py: list[Path] = []
    yml: list[Path] = []
    total = 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        kind = kind_of(root, p)
        if kind is None:
            continue
        size = p.stat().st_size
        rel = p.relative_to(root)
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{rel} is {size} bytes; lumos dev reads project files up to {MAX_FILE_BYTES}.",
                fix="Keep data out of .py/.yaml files under the project, or move it into a "
                "hidden or data directory lumos dev does not watch.",
            )
        total += size
        (py if kind == "python" else yml).append(p)
        if len(py) + len(yml) > MAX_FILES or total > MAX_TOTAL_BYTES:
            raise ConfigError(
                f"{root} has more than {MAX_FILES} Python/YAML files or "
                f"{MAX_TOTAL_BYTES} bytes of them: too many to watch and copy on each save.",
                fix="Run lumos dev on the project directory itself (not a parent of many "
                "projects); put virtual environments in .venv (skipped).",
            )
    return py, yml


def module_name(rel: Path) -> str | None:
    """The import name of a project file (``pkg/mod.py`` -> ``pkg.mod``), or None when
    it is not importable by a dotted name."""
    parts = list(rel.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def syntax_problems(project: Path, files: Iterable[Path]) -> list[Problem]:
    """Syntax errors of Python files, found by compiling (nothing is executed)."""
    out = []
    for f in files:
        try:
            compile(f.read_bytes(), str(f), "exec", dont_inherit=True)
        except SyntaxError as exc:
            out.append(_syntax_problem(exc, project, f))
        except (OSError, ValueError) as exc:  # unreadable, or a NUL byte
            out.append(Problem(_rel(project, f), 1, str(exc)))
    return out


def _rel(project: Path, path: str | Path) -> str:
    try:
        return Path(path).resolve().relative_to(project.resolve()).as_posix()
    except ValueError:
        return str(path)


def _syntax_problem(exc: SyntaxError, project: Path, default: Path) -> Problem:
    where = exc.filename or str(default)
    return Problem(_rel(project, where), int(exc.lineno or 1), f"SyntaxError: {exc.msg}")


def problem_from_exception(
    exc: BaseException, project: Path, default: Path, snapshot: Path | None = None
) -> Problem:
    """The project file and line an exception points at: a SyntaxError's own position,
    else the innermost traceback frame in a project file (in ``snapshot``, the copy
    that was imported, mapped back to the project), else ``default`` line 1."""
    mapped = project if snapshot is None else snapshot
    if isinstance(exc, SyntaxError):
        return _syntax_problem(exc, mapped, default)
    message = f"{type(exc).__name__}: {exc}".strip()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        try:
            rel = Path(frame.filename).resolve().relative_to(mapped.resolve())
        except ValueError:
            continue
        return Problem(rel.as_posix(), int(frame.lineno or 1), message)
    return Problem(_rel(mapped, default), 1, message)


_WHERE = re.compile(r"^(?P<file>[^\n:]+\.(?:ya?ml|py)):(?P<line>\d+): (?P<msg>.*)$", re.S)


def problem_from_message(text: str, project: Path, default: Path) -> Problem:
    """A ``path:line: message`` error (how YAML and workflow errors are worded) as a
    Problem; other texts point at ``default`` line 1."""
    m = _WHERE.match(text.strip())
    if m:
        return Problem(_rel(project, m["file"]), int(m["line"]), m["msg"])
    return Problem(_rel(project, default), 1, text.strip())


def refs_in_body(body: Any) -> list[str]:
    """``module:attr`` references a workflow body imports when it runs: functions of
    function steps and of tools, and tools given by path (in any nested step or agent)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "function" and isinstance(v, str) and ":" in v:
                    found.append(v)
                elif k == "tools" and isinstance(v, list):
                    found.extend(t for t in v if isinstance(t, str) and ":" in t)
                    walk([t for t in v if not isinstance(t, str)])
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(body)
    return list(dict.fromkeys(found))
