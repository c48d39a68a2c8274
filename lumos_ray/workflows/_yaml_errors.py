"""YAML with line numbers: map a validation error's location back to its line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lumos_ray._yaml import YamlProblem, parse_yaml
from lumos_ray.errors import WorkflowDefinitionError

__all__ = ["parse_yaml_with_lines"]


def parse_yaml_with_lines(path: Path) -> tuple[Any, Callable[[tuple[Any, ...]], int]]:
    """Load ``path``; also return ``locate(loc) -> line`` for a pydantic error loc."""
    if not path.is_file():
        raise WorkflowDefinitionError(f"{path}: file not found")
    try:
        # bounded: alias bombs, deep nesting, recursive anchors, non-UTF-8 bytes
        data, node = parse_yaml(path.read_bytes())
    except YamlProblem as exc:
        raise WorkflowDefinitionError(
            f"{path}:{exc.line}: {exc.problem}", file=str(path), line=exc.line
        ) from None

    def locate(loc: tuple[Any, ...]) -> int:
        cur = node
        best = cur.start_mark.line + 1 if cur is not None else 1
        for part in loc:
            nxt = None
            if isinstance(cur, yaml.MappingNode):
                for k, v in cur.value:
                    if k.value == part or (part in ("if_", "else_") and k.value == part[:-1]):
                        nxt = v
                        best = k.start_mark.line + 1
                        break
            elif isinstance(cur, yaml.SequenceNode) and isinstance(part, int):
                if 0 <= part < len(cur.value):
                    nxt = cur.value[part]
                    best = nxt.start_mark.line + 1
            if nxt is None:
                continue  # a tag in the loc (union member), or the key is missing
            cur = nxt
        return best

    return data, locate
