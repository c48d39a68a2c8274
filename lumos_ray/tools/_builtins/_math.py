"""Math tools: a safe calculator (AST walk, never ``eval``), statistics, unit conversion."""

from __future__ import annotations

import ast
import math
import operator
import statistics as _stats
from typing import Any

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._tool import tool

__all__ = ["TOOLS", "calculator", "describe_numbers", "unit_convert"]

_BINOPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Any] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "factorial": math.factorial,
    "gcd": math.gcd,
    "hypot": math.hypot,
}
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_MAX_EXPR = 500
_MAX_POW_EXP = 10_000
#: Largest integer result (bits). Below Python's 4300-digit int->str limit, so every
#: result can also be written out as JSON.
_MAX_INT_BITS = 14_000
_MAX_FACTORIAL = 1000


def _too_large(what: str, *, computed: bool = False) -> ToolNotAllowedError:
    when = "" if computed else "; it was refused before computing it"
    return ToolNotAllowedError(
        f"{what} {'has' if computed else 'would have'} more than {_MAX_INT_BITS} bits "
        f"(about 4200 digits), the calculator's limit{when}. Use smaller numbers or "
        "floats (e.g. 9.0 ** 300)."
    )


def _check_size(op: ast.operator, left: Any, right: Any) -> None:
    """Refuse an integer operation whose result would exceed ``_MAX_INT_BITS``
    *before* computing it: ``(9**9999)**3000`` is bounded by its size estimate
    (exponent * bits of the base), never by running the multiplication."""
    if isinstance(op, ast.Pow):
        if abs(right) > _MAX_POW_EXP:
            raise ToolNotAllowedError(
                f"exponent {right} is too large (limit {_MAX_POW_EXP}); use a smaller one"
            )
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            if (abs(left).bit_length() - 1) * right > _MAX_INT_BITS:
                raise _too_large("the power")
    elif isinstance(op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
        if left and right and left.bit_length() + right.bit_length() - 1 > _MAX_INT_BITS:
            raise _too_large("the product")


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        _check_size(node.op, left, right)
        result = _BINOPS[type(node.op)](left, right)
        if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
            raise _too_large("the result", computed=True)
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
    ):
        args = [_eval(a) for a in node.args]
        if node.func.id == "factorial" and args and abs(args[0]) > _MAX_FACTORIAL:
            raise ToolNotAllowedError(f"factorial argument is too large (limit {_MAX_FACTORIAL})")
        return _FUNCS[node.func.id](*args)
    what = type(node).__name__
    if isinstance(node, ast.Name):
        what = f"name {node.id!r}"
    elif isinstance(node, ast.Call):
        what = "this function call"
    raise ToolNotAllowedError(
        f"{what} is not allowed in a calculator expression; use numbers, + - * / // % **, "
        f"parentheses, {', '.join(sorted(_CONSTS))} and {', '.join(sorted(_FUNCS))}"
    )


@tool
def calculator(expression: str) -> float | int:
    """Evaluate an arithmetic expression exactly as written, without running any code.

    Args:
        expression: Arithmetic such as "2 * (3 + 4) ** 2 / sqrt(16)". Supports + - * / //
            % **, parentheses, pi, e, tau and math functions (sqrt, log, sin, round, ...).
    """
    if len(expression) > _MAX_EXPR:
        raise ToolNotAllowedError(f"expression longer than {_MAX_EXPR} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not a valid arithmetic expression: {exc.msg}") from None
    try:
        return _eval(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ToolError(f"cannot evaluate: {exc}") from None


@tool
def describe_numbers(numbers: list[float]) -> dict[str, float | int]:
    """Summary statistics of a list of numbers: count, sum, mean, median, stdev, min, max.

    Args:
        numbers: The values to summarise (at least one).
    """
    if not numbers:
        raise ToolError("numbers is empty; give at least one value")
    bad = [x for x in numbers if not math.isfinite(x)]
    if bad:
        raise ToolError(f"numbers must be finite; got {bad[0]!r}. Drop infinities and NaN first.")
    out: dict[str, float | int] = {
        "count": len(numbers),
        "sum": math.fsum(numbers),
        "mean": _stats.fmean(numbers),
        "median": _stats.median(numbers),
        "min": min(numbers),
        "max": max(numbers),
    }
    out["stdev"] = _stats.stdev(numbers) if len(numbers) > 1 else 0.0
    return out


# unit -> (dimension, factor to the SI base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "cm": ("length", 0.01),
    "mm": ("length", 0.001),
    "mi": ("length", 1609.344),
    "yd": ("length", 0.9144),
    "ft": ("length", 0.3048),
    "in": ("length", 0.0254),
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "mg": ("mass", 1e-6),
    "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
    "s": ("time", 1.0),
    "min": ("time", 60.0),
    "h": ("time", 3600.0),
    "day": ("time", 86400.0),
    "l": ("volume", 0.001),
    "ml": ("volume", 1e-6),
    "m3": ("volume", 1.0),
    "gal": ("volume", 0.003785411784),
    "b": ("data", 1.0),
    "kb": ("data", 1e3),
    "mb": ("data", 1e6),
    "gb": ("data", 1e9),
    "kib": ("data", 1024.0),
    "mib": ("data", 1024.0**2),
    "gib": ("data", 1024.0**3),
}
_TEMPS = ("c", "f", "k")


def _to_kelvin(v: float, u: str) -> float:
    return {"c": v + 273.15, "f": (v - 32) * 5 / 9 + 273.15, "k": v}[u]


def _from_kelvin(v: float, u: str) -> float:
    return {"c": v - 273.15, "f": (v - 273.15) * 9 / 5 + 32, "k": v}[u]


@tool
def unit_convert(value: float, from_unit: str, to_unit: str) -> dict[str, Any]:
    """Convert a value between units of length, mass, time, volume, data size or temperature.

    Args:
        value: The quantity to convert.
        from_unit: Unit of the value, e.g. km, mi, kg, lb, h, l, gal, GiB, C, F, K.
        to_unit: Unit to convert to (same dimension as from_unit).
    """
    f, t = from_unit.strip().lower(), to_unit.strip().lower()
    if f in _TEMPS and t in _TEMPS:
        result = _from_kelvin(_to_kelvin(value, f), t)
    else:
        if f not in _UNITS or t not in _UNITS:
            bad = from_unit if f not in _UNITS else to_unit
            raise ToolError(f"unknown unit {bad!r}; known: {', '.join([*_UNITS, 'C', 'F', 'K'])}")
        (fd, ff), (td, tf) = _UNITS[f], _UNITS[t]
        if fd != td:
            raise ToolError(f"cannot convert {fd} ({from_unit}) to {td} ({to_unit})")
        result = value * ff / tf
    return {"value": result, "unit": to_unit}


TOOLS = [calculator, describe_numbers, unit_convert]
