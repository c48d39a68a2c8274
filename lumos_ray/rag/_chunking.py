"""Recursive, token-counted chunking with overlap.

Split on the coarsest separator that works (paragraphs, then lines, sentences, words)
until every piece fits, then pack neighbouring pieces into chunks of at most
``chunk_tokens`` tokens, carrying the last ``overlap_tokens`` worth of pieces into the
next chunk so a fact cut at a boundary is still whole in one of the two chunks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from lumos_ray.rag._config import ChunkingConfig

__all__ = ["TextChunk", "chunk_text", "token_counter"]

_SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")
_REGEX_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class TextChunk:
    index: int
    text: str
    tokens: int


def _regex_count(text: str) -> int:
    return len(_REGEX_TOKEN.findall(text))


@functools.lru_cache(maxsize=1)
def _model_tokenizer() -> object:
    from tokenizers import Tokenizer

    from lumos_ray.rag._embed import minilm_path

    return Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))


def token_counter(kind: str) -> Callable[[str], int]:
    """regex: words + punctuation; model: the embedding model's WordPiece tokens."""
    if kind == "model":
        tok = _model_tokenizer()
        return lambda s: len(tok.encode(s, add_special_tokens=False).ids)  # type: ignore[attr-defined]
    return _regex_count


def _split(text: str, limit: int, count: Callable[[str], int], seps: tuple[str, ...]) -> list[str]:
    """Pieces of ``text`` that each fit in ``limit`` tokens (separators kept)."""
    if count(text) <= limit:
        return [text]
    for i, sep in enumerate(seps):
        if sep not in text:
            continue
        parts = text.split(sep)
        pieces = [p + sep for p in parts[:-1]] + [parts[-1]]
        out: list[str] = []
        for piece in pieces:
            if not piece:
                continue
            if count(piece) <= limit:
                out.append(piece)
            else:
                out.extend(_split(piece, limit, count, seps[i + 1 :]))
        return out
    # No separator left (one enormous token run): cut by regex tokens.
    toks = _REGEX_TOKEN.findall(text)
    return [" ".join(toks[j : j + limit]) for j in range(0, len(toks), limit)]


def chunk_text(text: str, cfg: ChunkingConfig | None = None) -> list[TextChunk]:
    """Chunks of ``text`` (whitespace-normalized at the edges), in order."""
    cfg = cfg or ChunkingConfig()
    count = token_counter(cfg.tokenizer)
    limit = cfg.chunk_tokens
    overlap = min(cfg.overlap_tokens, limit // 2)
    text = text.strip()
    if not text:
        return []
    pieces = _split(text, limit, count, _SEPARATORS)
    sizes = [count(p) for p in pieces]
    chunks: list[TextChunk] = []
    cur: list[int] = []
    cur_tokens = 0
    for i, size in enumerate(sizes):
        if cur and cur_tokens + size > limit:
            chunks.append(_emit(len(chunks), pieces, cur, cur_tokens))
            # Keep trailing pieces worth up to `overlap` tokens for the next chunk.
            keep: list[int] = []
            kept = 0
            for j in reversed(cur):
                if kept + sizes[j] > overlap or kept + sizes[j] + size > limit:
                    break
                keep.insert(0, j)
                kept += sizes[j]
            cur, cur_tokens = keep, kept
        cur.append(i)
        cur_tokens += size
    if cur:
        chunks.append(_emit(len(chunks), pieces, cur, cur_tokens))
    return chunks


def _emit(index: int, pieces: list[str], idx: list[int], tokens: int) -> TextChunk:
    return TextChunk(index=index, text="".join(pieces[j] for j in idx).strip(), tokens=tokens)
