"""Bounds on query input, checked once where a query enters (router, local collection).

Why: a query is embedded, tokenized and expanded through the graph; an unbounded text
or ``k`` turns one call into minutes of work or a huge reply. Every bad value is a
:class:`RagError` that says what was wrong and what to send instead.
"""

from __future__ import annotations

from lumos_ray.errors import RagError
from lumos_ray.rag._config import SEARCH_MODES

__all__ = ["MAX_ENTITY_NAMES", "MAX_K", "MAX_QUERY_CHARS", "check_query", "entity_keys"]

#: Longest query text accepted (the embedder truncates at 256 word pieces anyway).
MAX_QUERY_CHARS = 4096
#: Most hits one query may ask for.
MAX_K = 200
#: Most entity names one merge may name, and the longest name.
MAX_ENTITY_NAMES = 100
_MAX_NAME_CHARS = 300


def check_query(text: object, mode: object, k: object) -> None:
    """Raise a RagError naming the problem when a query is outside the bounds."""
    if mode not in SEARCH_MODES:
        raise RagError(
            f"Unknown query mode {mode!r}.", fix="Use one of: " + ", ".join(SEARCH_MODES) + "."
        )
    if not isinstance(text, str) or not text.strip():
        raise RagError("The query text is empty.", fix="Send the question as a non-empty string.")
    if len(text) > MAX_QUERY_CHARS:
        raise RagError(
            f"The query is {len(text)} characters; at most {MAX_QUERY_CHARS} are accepted.",
            fix="Send the question itself, not a document (ingest documents instead).",
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise RagError(
            f"k must be an integer from 1 to {MAX_K}, got {k!r}.",
            fix=f"Ask for between 1 and {MAX_K} hits.",
        )


def entity_keys(names: object, what: str = "entity name") -> list[str]:
    """Graph keys of entity names (``entity_key``), or a RagError naming the bad one."""
    from lumos_ray.rag._entities import entity_key

    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        names = [names]
    if not 1 <= len(names) <= MAX_ENTITY_NAMES:
        raise RagError(
            f"Give from 1 to {MAX_ENTITY_NAMES} {what}s, got {len(names)}.",
            fix="Split the request.",
        )
    keys = []
    for name in names:
        if not isinstance(name, str) or len(name) > _MAX_NAME_CHARS:
            raise RagError(
                f"Bad {what} {str(name)[:80]!r}: expected a string of at most "
                f"{_MAX_NAME_CHARS} characters.",
                fix="Pass the entity's name as it appears in the text, e.g. 'Osric Pell'.",
            )
        key = entity_key(name)
        if not key:
            raise RagError(
                f"The {what} {name!r} has no letters or digits, so it names no entity.",
                fix="Pass the entity's name as it appears in the text, e.g. 'Osric Pell'.",
            )
        keys.append(key)
    return keys
