"""Lexical signals for reranking and multi-hop path scoring, with no model.

A question's *content terms* are its words minus stop words and question words, each
reduced by a light suffix stemmer ("founder", "founded", "founding" → "found"), so a
chunk that says "was founded by" counts as covering "the founder of". Coverage is the
weighted share of the question's terms a chunk (or a whole path of chunks) contains;
the multi-hop mode follows links whose sentence covers terms the path has not covered
yet, which is how it knows which of a chunk's entities the question is about.

Rare terms weigh more: weights are ``1 / (1 + log(1 + df))`` with ``df`` the number of
candidate chunks that contain the term, computed over the candidates of one query
(a cheap, corpus-free stand-in for IDF).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = [
    "ChunkTerms",
    "content_terms",
    "link_terms",
    "relation_slots",
    "sentence_naming",
    "sentence_terms",
    "sentences",
    "stem",
    "terms_of",
]

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")

# Function words, question words and verbs that carry no retrievable content.
_STOP = frozenset(
    """a an the this that these those it its he she they him her his hers their them we us
    our you your i me my of in on at to for from by with as into onto upon about over under
    and or but nor so if then than when while where which who whom whose what why how is
    are was were be been being am do does did done doing have has had having can could
    shall should will would may might must not no yes also too very just only any all
    some each every both either neither one ones there here s t d ll re ve m""".split()
)

_SUFFIXES = (
    "ational", "ization", "fulness", "ousness", "iveness", "ement", "ments", "ment", "ness",
    "ings", "ing", "ers", "er", "ies", "ied", "ed", "es", "ly", "s", "y",
)  # fmt: skip


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Strip one common English suffix, keeping at least 4 letters ('built' stays,
    'founded'/'founder' → 'found', 'study'/'studied' → 'stud')."""
    w = word.lower()
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 4:
            return w[: -len(suf)]
    return w


def terms_of(text: str) -> set[str]:
    """Stemmed content terms of any text."""
    return {stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOP and len(t) > 1}


def content_terms(question: str) -> list[str]:
    """The question's stemmed content terms, in order of first appearance."""
    out: dict[str, None] = {}
    for t in _TOKEN.findall(question.lower()):
        if t not in _STOP and len(t) > 1:
            out.setdefault(stem(t), None)
    return list(out)


def sentences(text: str) -> list[str]:
    """Sentences (and lines) of a chunk, for finding the one that names an entity."""
    return [s for s in _SENTENCE.split(text) if s.strip()]


def sentence_terms(text: str, names: Iterable[str]) -> set[str]:
    """Terms of the sentences of ``text`` that mention any of ``names`` (case-insensitive
    substring); the whole text when none does (an LLM-extracted name may be a paraphrase)."""
    low = [n.lower() for n in names if n]
    found: set[str] = set()
    hit = False
    for s in sentences(text):
        sl = s.lower()
        if any(n in sl for n in low):
            found |= terms_of(s)
            hit = True
    return found if hit else terms_of(text)


def link_terms(text: str, name: str, all_names: Iterable[str]) -> set[str]:
    """The *relation* words of the sentences that mention ``name``: their terms minus
    the terms of every entity name in them ("X was built by Y in 1890" → {built, 1890}).
    These say why the chunk links to the entity, which is what a multi-hop question
    asks about ("the company that *built* X")."""
    key = name.lower()
    names = [n.lower() for n in all_names if n]
    out: set[str] = set()
    for s in sentences(text):
        sl = s.lower()
        if key and key in sl:
            out |= terms_of(s) - set().union(*(terms_of(n) for n in names if n in sl))
    return out


@functools.lru_cache(maxsize=16384)
def _name_terms(name_lower: str) -> frozenset[str]:
    return frozenset(terms_of(name_lower))


class ChunkTerms:
    """A chunk's sentences, tokenized once, for the many coverage and link look-ups one
    multi-hop query makes on it (same results as :func:`terms_of` /
    :func:`link_terms`)."""

    __slots__ = ("all", "names", "sentences")

    def __init__(self, title: str, text: str, names: Iterable[str]) -> None:
        self.sentences = [(s.lower(), terms_of(s)) for s in sentences(text)]
        self.all: set[str] = terms_of(title).union(*(t for _, t in self.sentences))
        self.names = [n.lower() for n in names if n]

    def link(self, name: str) -> set[str]:
        """:func:`link_terms` of this chunk for ``name``."""
        key = name.lower()
        out: set[str] = set()
        if not key:
            return out
        for low, terms in self.sentences:
            if key in low:
                drop = set().union(*(_name_terms(n) for n in self.names if n in low))
                out |= terms - drop
        return out


def relation_slots(question: str, entity_keys: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Where each question term sits in the chain the question describes.

    English nests relations outward from the entity it names: in "the street of the
    company founded by the mentor of the author of *The Salt*", the first hop from *The
    Salt* is its author, then the author's mentor, then the company that mentor founded.
    So the content terms *before* the first named entity, counted from it, are slots
    1, 2, 3, ... (author=1, mentor=2, found=3, company=4, street=5); a repeated term gets
    every slot it occupies ("the mentor of the mentor" → mentor=(2, 3)). Terms after
    the entity, and questions naming no entity, get no slot (an empty dict: multi-hop
    scoring is then order-free).
    """
    toks = _TOKEN.findall(question.lower())
    first = len(toks)
    for key in entity_keys:
        kw = _TOKEN.findall(key.lower())
        if not kw:
            continue
        for i in range(min(first, len(toks) - len(kw) + 1)):
            if toks[i : i + len(kw)] == kw:
                first = i
                break
    if first == len(toks):
        return {}
    out: dict[str, list[int]] = {}
    n = 0
    for t in reversed(toks[:first]):
        if t in _STOP or len(t) <= 1:
            continue
        n += 1
        out.setdefault(stem(t), []).append(n)
    return {t: tuple(v) for t, v in out.items()}


def sentence_naming(text: str, name: str, limit: int = 300) -> str:
    """The first sentence of ``text`` that names ``name`` (bounded), else ''."""
    low = name.lower()
    for s in sentences(text):
        if low in s.lower():
            s = s.strip()
            return s if len(s) <= limit else s[: limit - 1] + "…"
    return ""
