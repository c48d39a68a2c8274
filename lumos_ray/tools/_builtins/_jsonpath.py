"""A small, safe JMESPath-like query language for ``json_query`` (no code execution).

Grammar (a subset of JMESPath):
    path      := segment ("." segment | bracket)*
    segment   := NAME | "*" | bracket
    bracket   := "[" INT "]" | "[" [INT] ":" [INT] "]" | "[*]" | "[?" cond "]"
    cond      := field OP literal | field           (truthiness)
    field     := NAME ("." NAME)* | "@"
    OP        := == != > >= < <=
    literal   := JSON number | "string" | 'string' | `json` | true | false | null
A ``[*]``, ``*`` or filter starts a projection: the rest of the path applies to each
element and ``null`` results are dropped, as in JMESPath. ``| length`` / ``| keys``
/ ``| sort`` at the end post-process the result.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lumos_ray.errors import ToolError

__all__ = ["query"]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<name>[A-Za-z_][A-Za-z0-9_\-]*|"(?:[^"\\]|\\.)*")
    | (?P<dot>\.)
    | (?P<star>\*)
    | (?P<filter>\[\?(?P<cond>(?:[^\]'"`]|'[^']*'|"[^"]*"|`[^`]*`)*)\])
    | (?P<bracket>\[(?P<inner>[^\]]*)\])
    | (?P<pipe>\|\s*(?P<fn>length|keys|sort|values|sum|max|min)\s*$)
    )""",
    re.VERBOSE,
)
_COND = re.compile(
    r"^\s*(?P<field>@|[A-Za-z_][\w.\-]*)\s*(?:(?P<op>==|!=|>=|<=|>|<)\s*(?P<lit>.+?))?\s*$"
)
_MISSING = object()


def _tokens(expr: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    expr = expr.strip()
    if expr in ("", "@"):
        return out
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ToolError(f"cannot parse query at position {pos}: {expr[pos : pos + 20]!r}")
        pos = m.end()
        if m.group("name"):
            name = m.group("name")
            out.append(("key", json.loads(name) if name.startswith('"') else name))
        elif m.group("star"):
            out.append(("values", None))
        elif m.group("filter") is not None:
            out.append(("filter", _parse_cond(m.group("cond"))))
        elif m.group("bracket") is not None:
            out.append(_parse_bracket(m.group("inner")))
        elif m.group("pipe"):
            out.append(("fn", m.group("fn")))
    return out


def _parse_bracket(inner: str) -> tuple[str, Any]:
    inner = inner.strip()
    if inner == "*":
        return ("project", None)
    if ":" in inner:
        parts = inner.split(":")
        if len(parts) > 3:
            raise ToolError(f"bad slice [{inner}]")
        try:
            nums = [int(p) if p.strip() else None for p in parts]
        except ValueError:
            raise ToolError(f"bad slice [{inner}]") from None
        return ("slice", slice(*nums))
    try:
        return ("index", int(inner))
    except ValueError:
        pass
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return ("key", inner[1:-1])
    raise ToolError(f"bad bracket [{inner}]: use [N], [start:end], [*], ['key'] or [?cond]")


def _literal(text: str) -> Any:
    text = text.strip()
    if text.startswith("`") and text.endswith("`"):
        text = text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        raise ToolError(
            f'bad literal {text!r}: use a number, "string", true, false or null'
        ) from None


def _parse_cond(cond: str) -> tuple[str, str | None, Any]:
    m = _COND.match(cond)
    if not m:
        raise ToolError(f"bad filter [?{cond}]: use [?field == 'value'] or [?field > 3]")
    lit = _literal(m.group("lit")) if m.group("op") else None
    return (m.group("field"), m.group("op"), lit)


def _get_field(value: Any, dotted: str) -> Any:
    if dotted == "@":
        return value
    cur = value
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _test(item: Any, cond: tuple[str, str | None, Any]) -> bool:
    field, op, lit = cond
    v = _get_field(item, field)
    if op is None:
        return v is not _MISSING and bool(v)
    if v is _MISSING:
        v = None
    try:
        return {
            "==": lambda: v == lit,
            "!=": lambda: v != lit,
            ">": lambda: v > lit,
            ">=": lambda: v >= lit,
            "<": lambda: v < lit,
            "<=": lambda: v <= lit,
        }[op]()
    except TypeError:
        return False


def _apply(tokens: list[tuple[str, Any]], value: Any) -> Any:
    for i, (kind, arg) in enumerate(tokens):
        if value is None:
            return None
        if kind == "key":
            value = value.get(arg) if isinstance(value, dict) else None
        elif kind == "index":
            value = (
                value[arg] if isinstance(value, list) and -len(value) <= arg < len(value) else None
            )
        elif kind == "slice":
            value = value[arg] if isinstance(value, list) else None
            if value is not None:
                return _project(tokens[i + 1 :], value)
        elif kind in ("project", "values", "filter"):
            if kind == "values" and isinstance(value, dict):
                items = list(value.values())
            elif isinstance(value, list):
                items = value
            else:
                return None
            if kind == "filter":
                items = [it for it in items if _test(it, arg)]
            return _project(tokens[i + 1 :], items)
        elif kind == "fn":
            value = _fn(arg, value)
    return value


def _project(rest: list[tuple[str, Any]], items: list[Any]) -> Any:
    # A trailing "| fn" applies to the projected list, not to each element.
    if rest and rest[-1][0] == "fn":
        return _fn(rest[-1][1], _project(rest[:-1], items))
    out = []
    for it in items:
        r = _apply(rest, it)
        if r is not None:
            out.append(r)
    return out


def _fn(name: str, value: Any) -> Any:
    try:
        if name == "length":
            return len(value)
        if name == "keys":
            return list(value.keys())
        if name == "values":
            return list(value.values())
        if name == "sort":
            return sorted(value)
        if name == "sum":
            return sum(value)
        if name == "max":
            return max(value)
        if name == "min":
            return min(value)
    except (TypeError, AttributeError, ValueError) as exc:
        raise ToolError(f"| {name} cannot apply to {type(value).__name__}: {exc}") from None
    raise ToolError(f"unknown function {name}")


def query(data: Any, expr: str) -> Any:
    """Evaluate ``expr`` against ``data``; missing keys give ``None``, never an error."""
    if len(expr) > 1000:
        raise ToolError("query longer than 1000 characters")
    return _apply(_tokens(expr), data)
