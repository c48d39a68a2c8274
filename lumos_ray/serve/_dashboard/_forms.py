"""The resume form of a suspended run, built from its human step's JSON schema.

Why typed fields: a reviewer approving a payment should tick a box, not type JSON.
Schemas of scalars (boolean, integer, number, string, a string enum) and objects of
such properties become one input each; anything deeper (nested objects, arrays) gets
a JSON text area. The server turns the posted strings back into typed JSON here; the
runner then validates the value against the schema as for any resume, so the form
cannot let through what the API would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lumos_ray.errors import InputValidationError

__all__ = ["MAX_FIELDS", "MAX_VALUE_CHARS", "FormField", "form_fields", "parse_form"]

#: Bounds of a resume form: fields shown, and characters of one posted value.
MAX_FIELDS = 50
MAX_VALUE_CHARS = 20_000
_SCALARS = frozenset({"boolean", "integer", "number", "string"})
#: The name of the single input of a scalar schema, and of the JSON text area.
VALUE = "value"
JSON_FIELD = "json"


@dataclass(frozen=True)
class FormField:
    """One input: ``kind`` is boolean, integer, number, string, enum or json."""

    name: str
    kind: str
    required: bool = False
    title: str = ""
    description: str = ""
    options: list[str] = field(default_factory=list)


def _kind(prop: Any) -> str | None:
    if not isinstance(prop, Mapping):
        return None
    if isinstance(prop.get("enum"), list) and all(isinstance(x, str) for x in prop["enum"]):
        return "enum"
    typ = prop.get("type")
    return str(typ) if typ in _SCALARS else None


def _field(name: str, prop: Mapping[str, Any], kind: str, required: bool) -> FormField:
    return FormField(
        name=name,
        kind=kind,
        required=required,
        title=str(prop.get("title") or name)[:200],
        description=str(prop.get("description") or "")[:500],
        options=[str(x)[:200] for x in prop.get("enum", [])][:100] if kind == "enum" else [],
    )


def form_fields(schema: Any) -> list[FormField]:
    """The inputs of the form for ``schema`` (a JSON text area when it is not flat)."""
    if not isinstance(schema, Mapping) or not schema:
        return [FormField(JSON_FIELD, "json", title="JSON")]
    kind = _kind(schema)
    if kind is not None:
        return [_field(VALUE, schema, kind, True)]
    props = schema.get("properties")
    if schema.get("type") == "object" and isinstance(props, Mapping) and props:
        required = set(schema.get("required") or ())
        fields = []
        for name, prop in list(props.items())[:MAX_FIELDS]:
            k = _kind(prop)
            if k is None:
                return [FormField(JSON_FIELD, "json", title="JSON")]
            fields.append(_field(str(name), prop, k, name in required))
        return fields
    return [FormField(JSON_FIELD, "json", title="JSON")]


def _bad(name: str, what: str) -> InputValidationError:
    return InputValidationError(
        f"The field {name[:100]!r} {what}.", fix="Correct the field and send the form again."
    )


def _value(f: FormField, raw: str | None) -> tuple[bool, Any]:
    """(present, typed value) of one posted field."""
    if f.kind == "boolean":
        # An unticked checkbox is not posted at all: false, not missing.
        return True, raw in ("on", "true", "1")
    if raw is None or raw == "":
        return False, None
    if len(raw) > MAX_VALUE_CHARS:
        raise _bad(f.name, f"is longer than {MAX_VALUE_CHARS} characters")
    if f.kind == "integer":
        try:
            return True, int(raw.strip())
        except ValueError:
            raise _bad(f.name, "must be a whole number") from None
    if f.kind == "number":
        try:
            num = float(raw.strip())
        except ValueError:
            raise _bad(f.name, "must be a number") from None
        if num != num or num in (float("inf"), float("-inf")):
            raise _bad(f.name, "must be a finite number")
        return True, int(num) if num.is_integer() and "." not in raw else num
    if f.kind == "enum" and raw not in f.options:
        raise _bad(f.name, "must be one of the listed options")
    if f.kind == "json":
        try:
            return True, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _bad(f.name, f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    return True, raw


def parse_form(schema: Any, form: Mapping[str, str]) -> Any:
    """The typed resume input from the posted form of :func:`form_fields` (``schema``)."""
    fields = form_fields(schema)
    if len(fields) == 1 and fields[0].name in (VALUE, JSON_FIELD):
        f = fields[0]
        present, value = _value(f, form.get(f.name))
        if not present:
            raise _bad(f.title or f.name, "is required")
        return value
    out: dict[str, Any] = {}
    for f in fields:
        present, value = _value(f, form.get(f.name))
        if present:
            out[f.name] = value
        elif f.required:
            raise _bad(f.name, "is required")
    return out
