"""Turn a typed Python function into a JSON Schema and a pydantic validator.

Why pydantic: it already knows how to express defaults, ``Optional``, ``Literal``,
lists and nested models as JSON Schema, and the same model then validates (and
coerces) the arguments a chat model sends, so schema and validation cannot drift.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

__all__ = [
    "ParsedDoc",
    "build_args_model",
    "clean_schema",
    "find_context_param",
    "format_args_error",
    "parse_docstring",
    "resolve_hints",
]

_GOOGLE_ARGS = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:\s*$")
_GOOGLE_SECTION = re.compile(
    r"^\s*(Returns|Return|Raises|Yields|Examples?|Notes?|See Also|References|Attributes|"
    r"Warnings?|Todo)\s*:\s*$"
)
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")


class ParsedDoc(typing.NamedTuple):
    summary: str
    params: dict[str, str]


def parse_docstring(doc: str | None) -> ParsedDoc:
    """Split a Google- or NumPy-style docstring into a summary and per-parameter text."""
    if not doc:
        return ParsedDoc("", {})
    lines = inspect.cleandoc(doc).splitlines()
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    i = 0
    in_summary = True
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        # NumPy: "Parameters" followed by "----------"
        if _NUMPY_UNDERLINE.match(nxt) and line.strip():
            in_summary = False
            header = line.strip().lower()
            i += 2
            block: list[str] = []
            while i < len(lines):
                if i + 1 < len(lines) and _NUMPY_UNDERLINE.match(lines[i + 1]) and lines[i].strip():
                    break
                block.append(lines[i])
                i += 1
            if header in ("parameters", "params", "arguments", "args"):
                params.update(_parse_numpy_params(block))
            continue
        if _GOOGLE_ARGS.match(line):
            in_summary = False
            i += 1
            block = []
            while i < len(lines) and not _GOOGLE_SECTION.match(lines[i]):
                if lines[i].strip() and not lines[i].startswith((" ", "\t")):
                    break
                block.append(lines[i])
                i += 1
            params.update(_parse_google_params(block))
            continue
        if _GOOGLE_SECTION.match(line):
            in_summary = False
        if in_summary:
            summary_lines.append(line)
        i += 1
    return ParsedDoc(_unwrap_paragraphs(summary_lines), params)


def _unwrap_paragraphs(lines: list[str]) -> str:
    """Join hard-wrapped lines with spaces; keep blank-line paragraph breaks."""
    paras: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paras[-1].append(line.strip())
        elif paras[-1]:
            paras.append([])
    return "\n\n".join(" ".join(p) for p in paras if p)


_GOOGLE_PARAM = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def _parse_google_params(block: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    indent: int | None = None
    current: str | None = None
    for raw in block:
        if not raw.strip():
            continue
        ind = len(raw) - len(raw.lstrip())
        m = _GOOGLE_PARAM.match(raw)
        if m and (indent is None or ind <= indent):
            indent = ind
            current = m.group(1)
            out[current] = m.group(3).strip()
        elif current is not None:
            out[current] = (out[current] + " " + raw.strip()).strip()
    return out


def _parse_numpy_params(block: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    current: str | None = None
    for raw in block:
        if not raw.strip():
            continue
        if not raw.startswith((" ", "\t")):
            name = raw.split(":", 1)[0].strip().lstrip("*")
            for part in name.split(","):  # "x, y : int"
                current = part.strip()
                out[current] = ""
        elif current is not None:
            out[current] = (out[current] + " " + raw.strip()).strip()
    return out


def find_context_param(fn: Callable[..., Any], hints: dict[str, Any]) -> str | None:
    """Name of the parameter that receives the ToolContext (injected, not in the schema)."""
    from lumos_ray.tools._context import ToolContext

    for name, param in inspect.signature(fn).parameters.items():
        ann = hints.get(name, param.annotation)
        if ann is ToolContext or _is_optional_of(ann, ToolContext):
            return name
        if isinstance(ann, str) and ann.replace(" ", "") in (
            "ToolContext",
            "ToolContext|None",
            "Optional[ToolContext]",
        ):
            return name
    return None


def _is_optional_of(ann: Any, cls: type) -> bool:
    args = typing.get_args(ann)
    return bool(args) and cls in args and all(a is cls or a is type(None) for a in args)


def resolve_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The function's type hints as objects (string annotations evaluated).

    Resolved once where the function is defined: a function cloudpickled by value
    keeps only the globals its *code* uses, so string annotations could not be
    evaluated again on the other side. An annotation that cannot be resolved
    becomes ``Any`` instead of failing the whole tool.
    """
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    hints: dict[str, Any] = {}
    globalns = getattr(fn, "__globals__", {})
    for pname, param in inspect.signature(fn).parameters.items():
        ann = param.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, dict(globalns))  # annotation text written by the tool's author
            except Exception:
                ann = Any
        if ann is not inspect.Parameter.empty:
            hints[pname] = ann
    return hints


def build_args_model(
    fn: Callable[..., Any],
    name: str,
    param_docs: dict[str, str],
    hints: dict[str, Any] | None = None,
) -> tuple[type[BaseModel], str | None]:
    """A pydantic model with one field per parameter (context parameter excluded)."""
    if hints is None:
        hints = resolve_hints(fn)
    ctx_name = find_context_param(fn, hints)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if pname == ctx_name or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if pname in ("self", "cls") and param.annotation is inspect.Parameter.empty:
            continue
        ann = hints.get(pname, param.annotation)
        if ann is inspect.Parameter.empty or isinstance(ann, str):
            ann = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        desc = param_docs.get(pname)
        fields[pname] = (ann, Field(default, description=desc) if desc else Field(default))
    model_name = "".join(p.capitalize() for p in re.split(r"[\W_]+", name) if p) + "Args"
    model = create_model(
        model_name or "ToolArgs",
        __config__=ConfigDict(
            extra="forbid", arbitrary_types_allowed=True, protected_namespaces=()
        ),
        **fields,
    )
    return model, ctx_name


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's auto titles (noise for a model) but keep everything that constrains."""

    def walk(node: Any, in_props: bool = False) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "title" and not in_props and isinstance(v, str):
                    continue
                out[k] = walk(v, in_props=(k in ("properties", "$defs")))
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    cleaned = walk(schema)
    cleaned.setdefault("type", "object")
    cleaned.setdefault("properties", {})
    return cleaned


def format_args_error(tool_name: str, exc: ValidationError) -> str:
    """One line per bad field, phrased so a chat model can fix its next call."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unexpected argument (not in the tool's schema)"
        elif err["type"] == "missing":
            msg = "required argument is missing"
        got = err.get("input")
        if err["type"] not in ("missing",) and not isinstance(got, dict):
            shown = repr(got)
            msg += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
        parts.append(f"- {loc}: {msg}")
    return f"Invalid arguments for tool {tool_name!r}:\n" + "\n".join(parts)
