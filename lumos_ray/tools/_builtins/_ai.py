"""AI helper tools that need no model: chunking text for a context window, and a
lexical (bag-of-words) similarity score.

Model-backed embeddings and semantic search live in the RAG subsystem
(``rag_search``); these are the cheap, deterministic building blocks an agent uses
to prepare or compare text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from lumos_ray.errors import ToolError
from lumos_ray.tools._tool import tool

__all__ = ["TOOLS", "chunk_text", "text_similarity"]

_WORD = re.compile(r"\w+", re.UNICODE)


def _vec(text: str) -> Counter[str]:
    return Counter(w.lower() for w in _WORD.findall(text))


@tool
def text_similarity(a: str, b: str) -> dict[str, float]:
    """Lexical similarity of two texts: cosine of word-count vectors and Jaccard of word sets
    (1.0 = same words). Not semantic: synonyms do not match.

    Args:
        a: First text.
        b: Second text.
    """
    va, vb = _vec(a), _vec(b)
    dot = sum(va[w] * vb[w] for w in va.keys() & vb.keys())
    na = math.sqrt(sum(v * v for v in va.values()))
    nb = math.sqrt(sum(v * v for v in vb.values()))
    union = va.keys() | vb.keys()
    return {
        "cosine": dot / (na * nb) if na and nb else 0.0,
        "jaccard": len(va.keys() & vb.keys()) / len(union) if union else 1.0,
    }


@tool
def chunk_text(text: str, max_chars: int = 1000, overlap: int = 100) -> dict[str, Any]:
    """Split text into chunks of at most max_chars, preferring paragraph, then sentence,
    then word boundaries, with some overlap between neighbours.

    Args:
        text: The text to split.
        max_chars: Upper bound on each chunk's length (at least 50).
        overlap: Characters repeated from the end of one chunk at the start of the next.
    """
    if max_chars < 50:
        raise ToolError("max_chars must be at least 50")
    if not 0 <= overlap < max_chars // 2:
        raise ToolError("overlap must be between 0 and max_chars / 2")
    chunks: list[dict[str, Any]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + max_chars)
        if end < n:
            window = text[start:end]
            for sep in ("\n\n", ". ", "\n", " "):
                cut = window.rfind(sep)
                if cut > max_chars // 2:
                    end = start + cut + len(sep)
                    break
        piece = text[start:end]
        if piece.strip():
            chunks.append({"index": len(chunks), "start": start, "end": end, "text": piece})
        if end >= n:
            break
        start = max(end - overlap, start + 1)
    return {"count": len(chunks), "chunks": chunks}


TOOLS = [text_similarity, chunk_text]
