"""Expressions in workflow definitions, evaluated in Jinja's sandbox.

A string that is exactly one ``{{ ... }}`` yields the native value; other strings
with ``{{`` are rendered as text; dicts and lists are rendered recursively.
Conditions (``if``, ``when``, ``until``, ``over``) are bare expressions.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lumos_ray.errors import WorkflowDefinitionError

__all__ = ["evaluate", "render", "truthy"]


class _Env(ImmutableSandboxedEnvironment):
    """Keys win over methods: `input.items` is the input's "items", not dict.items."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_env = _Env(undefined=StrictUndefined)
_WHOLE = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.S)


@functools.lru_cache(maxsize=1024)
def _compiled(expr: str) -> Any:
    try:
        return _env.compile_expression(expr, undefined_to_none=False)
    except TemplateError as exc:
        raise WorkflowDefinitionError(f"invalid expression {expr!r}: {exc}") from None


@functools.lru_cache(maxsize=1024)
def _template(text: str) -> Any:
    try:
        return _env.from_string(text)
    except TemplateError as exc:
        raise WorkflowDefinitionError(f"invalid template {text!r}: {exc}") from None


def evaluate(expr: str, scope: dict[str, Any]) -> Any:
    """The expression's value. A name that is not there (a step skipped by ``when``, a
    key the input lacks) is an error that names it, never a value: Jinja hands back an
    ``Undefined`` object here, which no step can use and the store cannot keep (a run
    whose output held one could not be finished)."""
    m = _WHOLE.match(expr)
    try:
        value = _compiled(m.group(1) if m else expr)(**scope)
    except TemplateError as exc:
        raise WorkflowDefinitionError(f"cannot evaluate {expr!r}: {exc}") from None
    if isinstance(value, Undefined):
        raise WorkflowDefinitionError(
            f"cannot evaluate {expr!r}: {value._undefined_message}",
            fix="A step skipped by `when` has no output: write `default`, e.g. "
            "'{{ state.total | default(none) }}', or check it with `is defined`.",
        )
    return value


def truthy(expr: str, scope: dict[str, Any]) -> bool:
    return bool(evaluate(expr, scope))


def render(value: Any, scope: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        m = _WHOLE.match(value)
        if m and "}}" not in m.group(1):
            return evaluate(m.group(1), scope)
        try:
            return _template(value).render(**scope)
        except TemplateError as exc:
            raise WorkflowDefinitionError(f"cannot render {value!r}: {exc}") from None
    if isinstance(value, dict):
        return {k: render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    return value
