"""Data tools: query JSON, profile CSV, text statistics and regex extraction."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import Counter
from typing import Any, Literal

import regex

from lumos_ray.errors import ToolError, ToolNotAllowedError
from lumos_ray.tools._builtins import _jsonpath
from lumos_ray.tools._builtins._bounds import RegexBudget, expanded_size
from lumos_ray.tools._builtins._safety import resolve_in_workspace
from lumos_ray.tools._context import ToolContext
from lumos_ray.tools._tool import tool

__all__ = [
    "TOOLS",
    "convert_format",
    "csv_stats",
    "hash_text",
    "json_query",
    "json_validate",
    "regex_extract",
    "text_stats",
]

_MAX_TEXT = 5_000_000
#: Seconds all of one call's regular-expression matching may take.
_REGEX_SECONDS = 1.0
#: Values (scalars + containers) a converted document may expand to, and the
#: characters of the converted text: bounds the YAML "billion laughs" (a few hundred
#: bytes whose aliases expand to gigabytes).
_MAX_VALUES = 1_000_000
_MAX_DEPTH = 100
_MAX_OUTPUT = 10_000_000
#: Most matches regex_extract returns, whatever a call asks for (each is kept with its
#: groups and returned to the model: "." over 5 MB of text was ~250 MB in the process).
_MAX_MATCHES = 10_000


@tool
def json_query(data: Any, query: str) -> Any:
    """Select parts of a JSON value with a JMESPath-like path expression.

    Examples: "user.name", "items[0]", "items[*].price", "items[?price > `10`].name",
    "items[-2:]", "items | length".

    Args:
        data: The JSON value to query (an object/array, or a string holding JSON).
        query: Path expression: dotted keys, [N], [start:end], [*], [?field op literal],
            * over object values, and a final "| length", "| keys", "| sort", "| sum",
            "| max" or "| min".
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            pass  # a plain string is a valid JSON value too
    return _jsonpath.query(data, query)


def _num(v: str) -> float | None:
    try:
        f = float(v)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


#: csv_stats keeps every cell it reads (for exact statistics and value counts), so what
#: it reads is bounded: columns profiled, cells and characters kept, the longest
#: physical line, and the characters of each value shown in the result.
_CSV_MAX_COLUMNS = 1000
_CSV_MAX_CELLS = 1_000_000
_CSV_MAX_CHARS = 10_000_000
_CSV_MAX_LINE = 1_000_000
_CSV_SHOWN_CHARS = 200


def _csv_lines(fh: Any) -> Any:
    """The lines of ``fh``; a line longer than ``_CSV_MAX_LINE`` is refused before it is
    read whole (a one-line file of millions of fields would otherwise be split in
    memory at once)."""
    while line := fh.readline(_CSV_MAX_LINE + 1):
        if len(line) > _CSV_MAX_LINE:
            raise ToolNotAllowedError(
                f"the CSV has a line longer than {_CSV_MAX_LINE} characters; csv_stats "
                "profiles tables with shorter rows. Split the file, or check the delimiter."
            )
        yield line


@tool
def csv_stats(
    path: str | None = None,
    text: str | None = None,
    delimiter: str = ",",
    max_rows: int = 200_000,
    ctx: ToolContext | None = None,
) -> dict[str, Any]:
    """Profile a CSV table: per column the count, missing values, and numeric
    statistics (mean, min, max, stdev, sum) or the most common values.

    At most 1,000 columns are profiled and at most 1,000,000 cells (10 million
    characters) read; the result says when either limit cut the table short.

    Args:
        path: CSV file in the workspace (give this or text).
        text: CSV content inline (give this or path).
        delimiter: Field separator.
        max_rows: Read at most this many data rows.
    """
    if (path is None) == (text is None):
        raise ToolError("give exactly one of path or text")
    if len(delimiter) != 1:
        raise ToolError(f"delimiter must be one character, got {delimiter!r}")
    if path is not None:
        p = resolve_in_workspace(ctx, path)
        if not p.is_file():
            raise ToolError(f"no such file in the workspace: {path!r}")
        fh: Any = p.open(newline="", encoding="utf-8", errors="replace")
    else:
        fh = io.StringIO(text)
    with fh:
        reader = csv.reader(_csv_lines(fh), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise ToolError("the CSV is empty") from None
        columns_truncated = len(header) > _CSV_MAX_COLUMNS
        header = header[:_CSV_MAX_COLUMNS]
        cols: list[list[str]] = [[] for _ in header]
        rows = cells = chars = 0
        budget_hit = False
        for row in reader:
            if rows >= max_rows:
                break
            values = [row[i].strip() if i < len(row) else "" for i in range(len(header))]
            cells += len(values)
            chars += sum(len(v) for v in values)
            if cells > _CSV_MAX_CELLS or chars > _CSV_MAX_CHARS:
                budget_hit = True
                break
            rows += 1
            for i, v in enumerate(values):
                cols[i].append(v)
    columns: dict[str, Any] = {}
    for name, values in zip(header, cols, strict=True):
        present = [v for v in values if v != ""]
        info: dict[str, Any] = {"count": len(present), "missing": len(values) - len(present)}
        nums = [_num(v) for v in present]
        if present and all(n is not None for n in nums):
            xs = [n for n in nums if n is not None]
            info.update(
                type="number",
                mean=statistics.fmean(xs),
                min=min(xs),
                max=max(xs),
                sum=math.fsum(xs),
                stdev=statistics.stdev(xs) if len(xs) > 1 else 0.0,
            )
        else:
            counts = Counter(present)
            info.update(
                type="string",
                distinct=len(counts),
                top=[{"value": _shown(v), "count": c} for v, c in counts.most_common(5)],
            )
        columns[_shown(name)] = info
    out: dict[str, Any] = {
        "rows": rows,
        "columns": columns,
        "truncated": rows >= max_rows or budget_hit,
    }
    if columns_truncated:
        out["columns_truncated"] = True
    if budget_hit:
        out["note"] = (
            f"stopped after {rows} rows: csv_stats reads at most {_CSV_MAX_CELLS} cells and "
            f"{_CSV_MAX_CHARS} characters"
        )
    return out


def _shown(value: str) -> str:
    """A value as the result shows it: at most ``_CSV_SHOWN_CHARS`` characters."""
    if len(value) <= _CSV_SHOWN_CHARS:
        return value
    return value[:_CSV_SHOWN_CHARS] + f"... ({len(value)} characters)"


_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*", re.UNICODE)
_SENT = re.compile(r"[.!?]+(?:\s|$)")
_STOP = frozenset(
    "a an and are as at be but by for from has have in is it its of on or that the this "
    "to was were will with i you he she we they not".split()
)


@tool
def text_stats(text: str, top_n: int = 10) -> dict[str, Any]:
    """Count characters, words, lines and sentences, and list the most frequent words.

    Args:
        text: The text to analyse.
        top_n: How many frequent words (common stop words excluded) to return.
    """
    if len(text) > _MAX_TEXT:
        raise ToolNotAllowedError(f"text longer than {_MAX_TEXT} characters")
    words = _WORD.findall(text)
    lowered = [w.lower() for w in words]
    freq = Counter(w for w in lowered if w not in _STOP)
    sentences = len(_SENT.findall(text)) or (1 if words else 0)
    return {
        "characters": len(text),
        "words": len(words),
        "unique_words": len(set(lowered)),
        "lines": len(text.splitlines()),
        "sentences": sentences,
        "avg_word_length": (sum(map(len, words)) / len(words)) if words else 0.0,
        "top_words": [{"word": w, "count": c} for w, c in freq.most_common(max(0, top_n))],
    }


@tool
def regex_extract(
    pattern: str,
    text: str,
    flags: list[Literal["i", "m", "s", "x"]] | None = None,
    max_matches: int = 100,
) -> dict[str, Any]:
    """Find all matches of a regular expression in a text, with their groups.

    Args:
        pattern: A Python-style regular expression.
        text: The text to search.
        flags: Any of "i" (ignore case), "m" (multiline), "s" (dot matches newline),
            "x" (verbose).
        max_matches: Stop after this many matches (at most 10,000).
    """
    if len(text) > _MAX_TEXT:
        raise ToolNotAllowedError(f"text longer than {_MAX_TEXT} characters")
    budget = RegexBudget(_REGEX_SECONDS, "the pattern")
    fl = 0
    for f in flags or []:
        fl |= {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL,
               "x": regex.VERBOSE}[f]  # fmt: skip
    compiled = budget.compile(pattern, fl)
    max_matches = max(0, min(max_matches, _MAX_MATCHES))
    matches: list[dict[str, Any]] = []
    truncated = False
    for m in budget.finditer(compiled, text):
        if len(matches) >= max_matches:
            truncated = True
            break
        item: dict[str, Any] = {"match": m.group(0), "start": m.start(), "end": m.end()}
        if m.groups():
            item["groups"] = list(m.groups())
        if m.groupdict():
            item["named"] = m.groupdict()
        matches.append(item)
    return {"count": len(matches), "matches": matches, "truncated": truncated}


@tool
def json_validate(data: Any, json_schema: dict[str, Any]) -> dict[str, Any]:
    """Check a JSON value against a JSON Schema and list every violation with its path.

    Args:
        data: The JSON value to check (or a string holding JSON).
        json_schema: The JSON Schema (draft 2020-12 unless it names another draft).
    """
    import jsonschema

    from lumos_ray.tools._builtins._schema_check import bounded_validator

    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            pass
    try:
        cls = jsonschema.validators.validator_for(json_schema)
        cls.check_schema(json_schema)
    except jsonschema.SchemaError as exc:
        raise ToolError(f"the schema itself is invalid: {exc.message}") from None
    budget = RegexBudget(_REGEX_SECONDS, "a pattern in the schema")
    validator = bounded_validator(cls, json_schema, budget)
    errors = []
    try:
        for e in validator.iter_errors(data):
            errors.append(e)
            if len(errors) >= 1000:
                break
    except RecursionError:
        raise ToolError(
            "the schema refers to itself without end (e.g. {'$ref': '#'} with nothing "
            "else); give every $ref cycle a keyword that stops it"
        ) from None
    errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
    return {
        "valid": not errors,
        "errors": [
            {"path": "/" + "/".join(str(p) for p in e.absolute_path), "message": e.message}
            for e in errors[:100]
        ],
    }


@tool
def convert_format(
    content: str,
    from_format: Literal["json", "yaml", "csv"],
    to_format: Literal["json", "yaml", "csv"],
) -> str:
    """Convert data between JSON, YAML and CSV (CSV <-> a list of flat objects).

    Args:
        content: The data as text.
        from_format: Format of content.
        to_format: Format to produce.
    """
    import yaml

    if len(content) > _MAX_TEXT:
        raise ToolNotAllowedError(f"content longer than {_MAX_TEXT} characters")
    try:
        if from_format == "json":
            value = json.loads(content)
        elif from_format == "yaml":
            value = _load_yaml(content)
        else:
            value = list(csv.DictReader(io.StringIO(content)))
    except RecursionError:
        raise ToolNotAllowedError(f"the {from_format} is nested too deeply; flatten it") from None
    except (ValueError, yaml.YAMLError, csv.Error) as exc:
        raise ToolError(f"cannot parse {from_format}: {str(exc)[:500]}") from None
    # Aliases share objects: measure the value as if expanded before writing it out.
    expanded_size(value, _MAX_VALUES)
    if to_format == "json":
        return _capped(json.dumps(value, indent=2, ensure_ascii=False, default=str))
    if to_format == "yaml":
        return _capped(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise ToolError("CSV output needs a list of objects")
    fields: list[str] = []
    for row in value:
        fields.extend(k for k in row if k not in fields)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in value:
        writer.writerow(
            {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
        )
    return _capped(out.getvalue())


def _load_yaml(content: str) -> Any:
    """``safe_load`` (never constructs Python objects), after the nesting depth was
    checked on the event stream: composing a deeply nested document recurses once
    per level (a RecursionError at best, a fatal stack overflow at worst)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    for ev in yaml.parse(content, Loader=loader):
        if isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                raise ToolNotAllowedError(
                    f"the YAML is nested more than {_MAX_DEPTH} levels deep; flatten it"
                )
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.load(content, Loader=loader)  # a safe loader: no Python objects


def _capped(text: str) -> str:
    if len(text) > _MAX_OUTPUT:
        raise ToolNotAllowedError(
            f"the converted data is {len(text)} characters, over the {_MAX_OUTPUT} limit; "
            "convert a smaller document"
        )
    return text


@tool
def hash_text(
    text: str,
    algorithm: Literal["sha256", "sha1", "md5", "sha512", "blake2b"] = "sha256",
    encoding: Literal["hex", "base64"] = "hex",
) -> dict[str, str]:
    """Hash a text (UTF-8) and return the digest, e.g. to compare or deduplicate content.

    Args:
        text: The text to hash.
        algorithm: Hash function.
        encoding: How to print the digest.
    """
    import base64
    import hashlib

    digest = hashlib.new(algorithm, text.encode("utf-8")).digest()
    value = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return {"algorithm": algorithm, "digest": value}


TOOLS = [
    json_query,
    json_validate,
    convert_format,
    csv_stats,
    text_stats,
    regex_extract,
    hash_text,
]
