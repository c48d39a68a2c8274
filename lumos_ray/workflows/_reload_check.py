"""``python -m lumos_ray.workflows._reload_check SNAPSHOT PROJECT``: import every module
of a code snapshot in a fresh interpreter and report, as one JSON line on stdout:

- ``problems``: import-time errors (``file:line`` in the project, not the snapshot);
- ``modules``: each module's top-level names (YAML references are checked against them
  without importing the user's code in the long-lived ``lumos dev`` process);
- ``workflows``: Python-defined workflows found at module top level, as data (name ->
  body), so ``lumos dev`` can register and stage them like YAML ones.

A fresh process because importing runs the user's module code: a broken or slow
module, or one with side effects, must not touch the watcher (it is bounded by a
timeout there), and a second import of a changed file in one process would see the
first copy.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from lumos_ray.workflows._reload_changes import (
    Problem,
    module_name,
    problem_from_exception,
)

__all__ = ["check", "main"]


def _importable(snapshot: Path) -> list[tuple[str, Path]]:
    """(module name, file) of each importable module: top-level files, and files of
    packages (directories with ``__init__.py`` all the way up)."""
    out = []
    for f in sorted(snapshot.rglob("*.py")):
        rel = f.relative_to(snapshot)
        if any(
            not (snapshot / Path(*rel.parts[:i]) / "__init__.py").is_file()
            for i in range(1, len(rel.parts))
        ):
            continue
        name = module_name(rel)
        if name:
            out.append((name, f))
    return out


def check(snapshot: Path, project: Path) -> dict[str, Any]:
    from lumos_ray.workflows._definition import Workflow
    from lumos_ray.workflows._serialize import workflow_to_data

    sys.path.insert(0, str(snapshot))
    problems: list[Problem] = []
    modules: dict[str, list[str]] = {}
    workflows: dict[str, dict[str, Any]] = {}
    for name, f in _importable(snapshot):
        try:
            mod = importlib.import_module(name)
        except BaseException as exc:  # user code may raise anything
            problems.append(problem_from_exception(exc, project, f, snapshot))
            continue
        modules[name] = sorted(vars(mod))
        for attr, value in list(vars(mod).items()):
            if not isinstance(value, Workflow) or attr.startswith("_"):
                continue
            rel = f.relative_to(snapshot).as_posix()
            if value.name in workflows:
                continue  # the same object imported under two names
            try:
                workflows[value.name] = {"body": workflow_to_data(value), "file": rel}
            except Exception as exc:
                problems.append(Problem(rel, 1, f"workflow {value.name!r}: {exc}"))
    return {
        "problems": [p.to_dict() for p in problems],
        "modules": modules,
        "workflows": workflows,
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    snapshot, project = Path(args[0]).resolve(), Path(args[1]).resolve()
    out = check(snapshot, project)
    sys.stdout.write("\n" + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
