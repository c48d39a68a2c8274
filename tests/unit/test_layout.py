"""The package's shape, checked from the source (``ast`` only: nothing is imported,
Ray never starts).

* Only an explicit, commented allowlist of modules imports ``ray``; everything else
  reaches Ray through :mod:`lumos_ray.runtime` (the one seam).
* No private Ray module is imported anywhere (``ray._private``, ``ray.*._internal``,
  any path segment starting with ``_``): one Ray patch release can break those.
* The module import graph has no cycles, and dependencies point down as
  /work/shared/ARCHITECTURE.md (``docs``) says.

Every ``import`` statement counts, at any depth (inside functions too: a lazy import
is still a dependency), except those under ``if TYPE_CHECKING:``, which never run.
An edge goes to the module named: ``from pkg import name`` is an edge to ``pkg.name``
when that is a module of ours, else to ``pkg``; the implicit import of parent
packages' ``__init__`` is not an edge (every submodule would otherwise "cycle" with a
package that re-exports it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PKG_ROOT = Path(__file__).resolve().parents[2] / "lumos_ray"
PKG = "lumos_ray"


#: Modules (a file, or a folder ending in "/") that may import ``ray`` themselves.
#: Everything else goes through ``lumos_ray.runtime``.
RAY_IMPORT_ALLOWLIST: dict[str, str] = {
    # The seam itself: connect/start, actors by name, tasks, cancel, Ray Jobs.
    "lumos_ray/runtime/": "the one seam to Ray core",
    # Serve deployments: @serve.deployment classes and serve.run/handles are Serve's API.
    "lumos_ray/serve/_app.py": "Serve deployments (builds and runs the Serve apps)",
    "lumos_ray/serve/_gateway.py": "Serve deployment (the HTTP gateway ingress)",
    "lumos_ray/serve/_llm.py": "Serve deployment (builds the LLM deployments)",
    "lumos_ray/serve/_llm_server.py": "Serve deployment (the vLLM model server, multiplexing)",
    # Ray Train: the per-worker training loop and the TorchTrainer that runs it.
    "lumos_ray/finetune/_train.py": "Ray Train loop (ray.train.report / get_context)",
    "lumos_ray/finetune/_trainer.py": "Ray Train driver (TorchTrainer, ScalingConfig)",
}

#: Files allowed to import private Ray modules: none, ever.
PRIVATE_RAY_IMPORT_TODO: frozenset[str] = frozenset()

#: Import cycles tolerated: none. Any cycle fails, with its path.
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()

#: Production modules that still import lumos_ray.testing, each with its reason.
#: None: the test models are found through the ``lumos_ray.chat_models`` entry points.
TESTING_IMPORT_EXCEPTIONS: dict[str, str] = {}

#: Layering (ARCHITECTURE.md): importer prefix -> module prefixes it must never import.
_ABOVE_STORE_AND_RUNTIME = (
    "lumos_ray.actors",
    "lumos_ray.tools",
    "lumos_ray.workflows",
    "lumos_ray.serve",
    "lumos_ray.finetune",
    "lumos_ray.federated",
    "lumos_ray.rag",
    "lumos_ray.cli",
    "lumos_ray.testing",
)
FORBIDDEN_IMPORTS: dict[str, tuple[str, ...]] = {
    "lumos_ray.store": _ABOVE_STORE_AND_RUNTIME,
    "lumos_ray.runtime": _ABOVE_STORE_AND_RUNTIME,
    "lumos_ray.platform": _ABOVE_STORE_AND_RUNTIME,  # tenants, keys, quotas: on the store
    "lumos_ray.finetune": ("lumos_ray.federated",),
}


@dataclass(frozen=True)
class _Import:
    target: str  # absolute dotted module as written (after resolving relative imports)
    names: tuple[str, ...]  # for `from X import a, b`; empty for `import X`
    line: int


def _files() -> list[Path]:
    return sorted(p for p in PKG_ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(PKG_ROOT.parent).as_posix()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping the body (not the ``else``) of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield sub
                yield from _walk(sub)
            continue
        yield child
        yield from _walk(child)


def _imports(path: Path) -> list[_Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path)
    is_pkg = path.name == "__init__.py"
    out: list[_Import] = []
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            out.extend(_Import(a.name, (), node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            out.append(_Import(target, tuple(a.name for a in node.names), node.lineno))
    return out


def _ray_paths(imp: _Import) -> list[str]:
    """Ray module paths an import statement reaches (``from ray import _private`` too)."""
    if imp.target != "ray" and not imp.target.startswith("ray."):
        return []
    if not imp.names:
        return [imp.target]
    return [imp.target, *(f"{imp.target}.{n}" for n in imp.names if n != "*")]


def _allowed(rel: str) -> str | None:
    for key, reason in RAY_IMPORT_ALLOWLIST.items():
        if rel == key or (key.endswith("/") and rel.startswith(key)):
            return reason
    return None


def test_allowlist_entries_have_reasons() -> None:
    for key, reason in RAY_IMPORT_ALLOWLIST.items():
        assert key.startswith(f"{PKG}/"), key
        assert reason.strip(), f"allowlist entry {key} needs a reason"


def test_only_allowlisted_modules_import_ray() -> None:
    offenders = [
        f"{_rel(p)}:{imp.line}: {imp.target}"
        for p in _files()
        if _allowed(_rel(p)) is None
        for imp in _imports(p)
        if _ray_paths(imp)
    ]
    assert not offenders, (
        "These modules import ray directly; go through lumos_ray.runtime (or add the "
        "module to RAY_IMPORT_ALLOWLIST in tests/unit/test_layout.py with its reason):\n"
        + "\n".join(offenders)
    )


def _private_segment(path: str) -> bool:
    return any(seg.startswith("_") for seg in path.split(".")[1:])


def test_no_private_ray_imports() -> None:
    found: dict[str, list[str]] = {}
    for p in _files():
        for imp in _imports(p):
            bad = [x for x in _ray_paths(imp) if _private_segment(x)]
            if bad:
                found.setdefault(_rel(p), []).append(f"{imp.line}: {', '.join(bad)}")
    offenders = {k: v for k, v in found.items() if k not in PRIVATE_RAY_IMPORT_TODO}
    assert not offenders, (
        "Private Ray modules (ray._private, ray.*._internal, any _segment) are imported; "
        "use Ray's public API instead:\n"
        + "\n".join(f"{k}:{line}" for k, lines in sorted(offenders.items()) for line in lines)
    )


def test_private_segment_detection() -> None:
    """The checks above are only as good as the matcher: pin what it catches."""
    assert _private_segment("ray._private.services")
    assert _private_segment("ray.llm._internal.serve")
    assert not _private_segment("ray.serve.llm")
    imp = _Import("ray", ("_private",), 1)
    assert any(_private_segment(x) for x in _ray_paths(imp))
    src = "def f():\n    import ray\nif TYPE_CHECKING:\n    import ray.serve\n"
    tree = ast.parse(src)
    seen = [n for n in _walk(tree) if isinstance(n, ast.Import)]
    assert [a.name for n in seen for a in n.names] == ["ray"]


# -- import graph -------------------------------------------------------------------


def _graph() -> dict[str, set[str]]:
    files = _files()
    modules = {_module_name(p) for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for p in files:
        src = _module_name(p)
        for imp in _imports(p):
            if imp.target != PKG and not imp.target.startswith(f"{PKG}."):
                continue
            targets = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in modules]
            if len(targets) < len(imp.names) or not imp.names:
                targets.append(imp.target)  # names that are attributes of the module
            for t in targets:
                if t in modules and t != src:
                    graph[src].add(t)
    return graph


def _sccs(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def _cycle_path(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """One concrete cycle inside ``comp`` (for the failure message)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for t in sorted(graph[node] & comp):
                if t == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return (
                        [start, *reversed(path[:-1]), start]
                        if len(path) > 1
                        else [start, node, start]
                    )
                if t not in prev:
                    prev[t] = node
                    nxt.append(t)
        frontier = nxt
    return sorted(comp)


def test_no_new_import_cycles() -> None:
    graph = _graph()
    new = [c for c in _sccs(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "Import cycles (a -> b -> ... -> a):\n" + "\n".join(
        " -> ".join(_cycle_path(graph, c)) + f"   (all of: {', '.join(sorted(c))})" for c in new
    )


def test_cycle_finder_finds_cycles() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    (comp,) = _sccs(g)
    assert comp == {"a", "b", "c"}
    assert _cycle_path(g, comp) == ["a", "b", "c", "a"]
    assert _sccs({"a": {"b"}, "b": set()}) == []


def test_tools_package_has_no_cycles() -> None:
    """tools -> registry -> builtins -> tools was a cycle; it must not come back even if
    a KNOWN_CYCLES entry is added for something else."""
    graph = _graph()
    bad = [c for c in _sccs(graph) if any(m.startswith("lumos_ray.tools") for m in c)]
    assert not bad, [_cycle_path(graph, c) for c in bad]


def test_layering() -> None:
    graph = _graph()
    problems = []
    for src, targets in sorted(graph.items()):
        for t in sorted(targets):
            if t == "lumos_ray.cli" or t.startswith("lumos_ray.cli."):
                if not src.startswith("lumos_ray.cli") and src != "lumos_ray.__main__":
                    problems.append(f"{src} -> {t}: nothing imports the CLI")
            if t == "lumos_ray.testing" and src != "lumos_ray.testing":
                known = frozenset({src, t}) in KNOWN_CYCLES or src in TESTING_IMPORT_EXCEPTIONS
                if not known:
                    problems.append(f"{src} -> {t}: production code never imports the test models")
            for importer, banned in FORBIDDEN_IMPORTS.items():
                if src == importer or src.startswith(f"{importer}."):
                    for b in banned:
                        if t == b or t.startswith(f"{b}."):
                            problems.append(f"{src} -> {t}: {importer} must not import {b}")
    assert not problems, "Layering violations (see ARCHITECTURE.md):\n" + "\n".join(problems)


def test_no_two_public_names_mean_different_things() -> None:
    """A name exported by two packages is the same object (a re-export), never two
    different things (once: two ModelConfig, two EmbeddingConfig, two list_runs)."""
    import importlib

    packages = ["actors", "tools", "workflows", "store", "runtime"]
    packages += ["serve", "finetune", "federated", "rag"]
    owners: dict[str, dict[int, str]] = {}
    for pkg in packages:
        module = importlib.import_module(f"lumos_ray.{pkg}")
        for name in module.__all__:
            owners.setdefault(name, {})[id(getattr(module, name))] = pkg
    top = importlib.import_module("lumos_ray")
    for name in top.__all__:
        owners.setdefault(name, {})[id(getattr(top, name))] = "lumos_ray"
    clashes = {n: sorted(o.values()) for n, o in owners.items() if len(o) > 1}
    assert not clashes, f"one public name, different objects: {clashes}"
