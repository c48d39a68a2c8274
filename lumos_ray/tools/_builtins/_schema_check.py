"""JSON Schema validation whose regular expressions are bounded in time.

``jsonschema`` matches ``pattern`` and ``patternProperties`` with Python's ``re``,
which cannot be stopped once a catastrophic backtrack starts. Here those keywords
(and ``additionalProperties``, which re-matches the property patterns) run on the
``regex`` engine under the call's :class:`RegexBudget`; every regex in the schema is
length-checked and compiled before any data is touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lumos_ray.errors import ToolNotAllowedError
from lumos_ray.tools._builtins._bounds import RegexBudget

__all__ = ["bounded_validator"]


def _regexes(schema: Any, found: set[str], keywords: set[str]) -> None:
    """Every regex in ``schema`` (``pattern`` strings, ``patternProperties`` keys)."""
    if isinstance(schema, list):
        for s in schema:
            _regexes(s, found, keywords)
        return
    if not isinstance(schema, dict):
        return
    keywords.update(k for k in schema if isinstance(k, str))
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            found.add(value)
        elif key == "patternProperties" and isinstance(value, dict):
            found.update(k for k in value if isinstance(k, str))
            _regexes(list(value.values()), found, keywords)
        elif key in ("properties", "$defs", "definitions", "dependentSchemas") and isinstance(
            value, dict
        ):
            _regexes(list(value.values()), found, keywords)
        elif isinstance(value, dict | list):
            _regexes(value, found, keywords)


def bounded_validator(cls: Any, schema: dict[str, Any], budget: RegexBudget) -> Any:
    """A validator instance of ``cls`` (already checked) for ``schema`` whose regex
    keywords match within ``budget``."""
    from jsonschema import ValidationError, validators

    found: set[str] = set()
    keywords: set[str] = set()
    _regexes(schema, found, keywords)
    compiled = {p: budget.compile(p) for p in sorted(found)}
    if compiled and "unevaluatedProperties" in keywords:
        raise ToolNotAllowedError(
            "a schema with both patternProperties/pattern and unevaluatedProperties "
            "cannot be checked with bounded regex matching; drop unevaluatedProperties "
            "(use additionalProperties) or the patterns"
        )

    def rx(p: str) -> Any:
        c = compiled.get(p)
        return c if c is not None else budget.compile(p)

    def pattern(v: Any, patrn: str, instance: Any, s: Any) -> Iterator[Any]:
        if v.is_type(instance, "string") and not budget.search(rx(patrn), instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(v: Any, pp: dict[str, Any], instance: Any, s: Any) -> Iterator[Any]:
        if not v.is_type(instance, "object"):
            return
        for patrn, subschema in pp.items():
            for k, value in instance.items():
                if budget.search(rx(patrn), k):
                    yield from v.descend(value, subschema, path=k, schema_path=patrn)

    def additional_properties(v: Any, ap: Any, instance: Any, s: Any) -> Iterator[Any]:
        if not v.is_type(instance, "object"):
            return
        props = s.get("properties", {})
        pats = [rx(p) for p in s.get("patternProperties", {})]
        extras = {
            k for k in instance if k not in props and not any(budget.search(p, k) for p in pats)
        }
        if v.is_type(ap, "object"):
            for extra in extras:
                yield from v.descend(instance[extra], ap, path=extra)
        elif not ap and extras:
            joined = ", ".join(repr(e) for e in sorted(extras, key=str))
            if "patternProperties" in s:
                listed = ", ".join(repr(p) for p in sorted(s["patternProperties"]))
                yield ValidationError(f"{joined} do(es) not match any of the regexes: {listed}")
            else:
                verb = "was" if len(extras) == 1 else "were"
                yield ValidationError(
                    f"Additional properties are not allowed ({joined} {verb} unexpected)"
                )

    bounded = validators.extend(
        cls,
        {
            "pattern": pattern,
            "patternProperties": pattern_properties,
            "additionalProperties": additional_properties,
        },
    )
    return bounded(schema)
