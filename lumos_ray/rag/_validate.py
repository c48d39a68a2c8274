"""Bounds on query input, checked once where a query enters (router, local collection).

Why: a query is embedded, tokenized and expanded through the graph; an unbounded text
or ``k`` turns one call into minutes of work or a huge reply. Every bad value is a
:class:`RagError` that says what was wrong and what to send instead.
"""

from __future__ import annotations

from lumos_ray.errors import RagError
from lumos_ray.rag._config import SEARCH_MODES

__all__ = ["MAX_K", "MAX_QUERY_CHARS", "check_query"]

#: Longest query text accepted (the embedder truncates at 256 word pieces anyway).
MAX_QUERY_CHARS = 4096
#: Most hits one query may ask for.
MAX_K = 200


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
