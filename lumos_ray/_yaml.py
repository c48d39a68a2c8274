"""YAML files lumos loads (workflows, serve, fine-tuning, federation, RAG configs),
parsed within bounds.

``yaml.safe_load`` builds no Python objects from tags, but it still trusts the shape of
the text: a few hundred bytes of nested aliases stand for billions of nodes (validating
them hangs the process), deep nesting exhausts Python's stack (a ``RecursionError``, not
a YAML error), an anchor may refer to itself (a cyclic structure), and a file that is
not UTF-8 fails with ``UnicodeDecodeError``. Every one of those becomes a
:class:`YamlProblem` with a line and a plain reason, before anything is built from the
data, so loaders report ``FILE:LINE: problem`` like any other mistake in the file.

The limits are far above any real configuration and far below what hurts a process.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "YamlProblem", "parse_yaml"]

#: Largest YAML file lumos parses.
MAX_YAML_BYTES = 4 * 1024 * 1024
#: Deepest nesting of collections (a workflow step inside a step is two levels).
MAX_YAML_DEPTH = 100
#: Most nodes the document may stand for once every alias is expanded.
MAX_YAML_NODES = 100_000


class YamlProblem(ValueError):
    """Why a YAML text cannot be loaded, and where (1-based line)."""

    def __init__(self, problem: str, line: int = 1) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_shape(root: yaml.Node) -> None:
    """Depth, expanded size and cycles of the composed node graph (aliases are shared
    nodes, so this is a DAG walk with memoised sizes: linear in the text, not in the
    expansion), iteratively (no recursion to exhaust)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            on_path.discard(key)
            line = node.start_mark.line + 1
            if depth[key] > MAX_YAML_DEPTH:
                raise YamlProblem(f"nested more than {MAX_YAML_DEPTH} levels deep", line)
            if size[key] > MAX_YAML_NODES:
                raise YamlProblem(
                    f"stands for more than {MAX_YAML_NODES} values once its aliases "
                    "(*name) are expanded; write the values out, or split the file",
                    line,
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlProblem(
                "an alias refers to the collection it is part of (a recursive anchor)",
                node.start_mark.line + 1,
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)


def parse_yaml(raw: bytes | str) -> tuple[Any, yaml.Node | None]:
    """The data in ``raw`` and its composed node tree (for mapping errors to lines).

    Raises YamlProblem for text that is not UTF-8, too large, invalid YAML, nested too
    deeply, a recursive anchor, or an alias bomb."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_YAML_BYTES:
            raise YamlProblem(f"the file is {len(raw)} bytes; at most {MAX_YAML_BYTES}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise YamlProblem(
                f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})", line
            ) from None
    else:
        text = raw
        if len(text) > MAX_YAML_BYTES:
            raise YamlProblem(f"the text is {len(text)} characters; at most {MAX_YAML_BYTES}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_shape(node)
        data = yaml.safe_load(text)
    except RecursionError:
        raise YamlProblem(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlProblem(f"invalid YAML: {problem}", mark.line + 1 if mark else 1) from None
    return data, node
