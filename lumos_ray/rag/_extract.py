"""Pluggable entity/relation extractors that feed the knowledge graph.

- :class:`OfflineExtractor` needs no model: proper-noun spans (capitalized word runs,
  with "of"/"de"/"von"... allowed inside) are entities, the document title is an
  entity of every chunk of its document, and entities next to each other in a
  sentence are related by the words between them. Crude, but it links a document that
  mentions "Ilse Marquand" to the document about her, which is what multi-hop
  retrieval needs.
- :class:`LLMExtractor` asks a chat model (OpenAI-compatible) for JSON triples.

Both return :class:`Extraction` per chunk; entity keys are normalized names so the
same entity found in two documents (or on two shards) is one node.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Protocol

from lumos_ray.errors import RagError
from lumos_ray.rag._config import ExtractorConfig

__all__ = [
    "Extraction",
    "Extractor",
    "LLMExtractor",
    "OfflineExtractor",
    "entity_key",
    "make_extractor",
    "parse_llm_triples",
]


@dataclass
class Extraction:
    """Entities (key → display name) and (head_key, relation, tail_key) triples."""

    entities: dict[str, str] = field(default_factory=dict)
    relations: list[tuple[str, str, str]] = field(default_factory=list)


class Extractor(Protocol):
    def extract(self, texts: list[str], titles: list[str]) -> list[Extraction]: ...


_PAREN = re.compile(r"\s*\([^)]*\)")
_NONWORD = re.compile(r"[^\w]+")


def entity_key(name: str) -> str:
    """Normalized entity id: 'The Dandy Warhols (band)' → 'dandy warhols'."""
    k = _NONWORD.sub(" ", _PAREN.sub("", name).lower()).strip()
    if k.startswith("the "):
        k = k[4:]
    return k


_STOP = frozenset(
    """a an the this that these those it its he she they his her their we our you your i
    in on at of for from by with to as and or but if when while after before since during
    there here what which who whom whose where why how all some many most one two three
    however although also then thus yes no not mr mrs ms dr st january february march
    april may june july august september october november december monday tuesday
    wednesday thursday friday saturday sunday""".split()
)
_CONNECT = frozenset({"of", "de", "da", "del", "der", "den", "von", "van", "la", "le", "du", "y"})
_WORD = re.compile(r"[\w][\w'\u2019.\-&]*|[^\w\s]")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])|\n+")


def _is_cap(tok: str) -> bool:
    return tok[:1].isupper() or (tok[:1].isdigit() and any(c.isalpha() for c in tok))


def _spans(sentence: str) -> list[tuple[str, int, int]]:
    """Proper-noun spans of one sentence as (name, first_token, last_token)."""
    toks = _WORD.findall(sentence)
    spans: list[tuple[str, int, int]] = []
    i = 0
    while i < len(toks):
        if not _is_cap(toks[i]):
            i += 1
            continue
        j = i
        while True:
            if j + 1 < len(toks) and _is_cap(toks[j + 1]):
                j += 1
            elif j + 2 < len(toks) and toks[j + 1].lower() in _CONNECT and _is_cap(toks[j + 2]):
                j += 2
            else:
                break
        words = toks[i : j + 1]
        # Drop a leading function word ("The", "In") but keep the rest of the span.
        while words and words[0].lower() in _STOP and len(words) > 1:
            words = words[1:]
        name = " ".join(w.rstrip(".") for w in words)
        key = entity_key(name)
        if key and key not in _STOP and len(key) > 1 and not key.isdigit():
            spans.append((name, i, j))
        i = j + 1
    return spans


class OfflineExtractor:
    """Heuristic proper-noun entities and co-occurrence relations; no model needed."""

    max_relation_words = 6

    def extract_one(self, text: str, title: str = "") -> Extraction:
        out = Extraction()
        title_key = entity_key(title) if title else ""
        if title_key:
            out.entities[title_key] = _PAREN.sub("", title).strip()
        for sentence in _SENT.split(text):
            toks = _WORD.findall(sentence)
            spans = _spans(sentence)
            for name, _, _ in spans:
                out.entities.setdefault(entity_key(name), name)
            for (a, _, ae), (b, bs, _) in itertools.pairwise(spans):
                ka, kb = entity_key(a), entity_key(b)
                if ka == kb:
                    continue
                between = [t for t in toks[ae + 1 : bs] if t.isalnum()]
                rel = " ".join(between[: self.max_relation_words]).lower() or "related to"
                out.relations.append((ka, rel, kb))
            # The subject of a document is related to everything its text names.
            if title_key:
                for name, _, _ in spans[:3]:
                    k = entity_key(name)
                    if k != title_key:
                        out.relations.append((title_key, "mentions", k))
        return out

    def extract(self, texts: list[str], titles: list[str]) -> list[Extraction]:
        return [self.extract_one(t, ti) for t, ti in zip(texts, titles, strict=True)]


_PROMPT = (
    "Extract the named entities and the relations between them from the text. Answer "
    'with JSON only: {"entities": ["name", ...], "relations": [["head", "relation", '
    '"tail"], ...]}.\n\nText:\n'
)


def parse_llm_triples(content: str) -> Extraction:
    """Parse a chat model's answer (JSON, possibly wrapped in prose or fences)."""
    m = re.search(r"\{.*\}", content, re.S)
    if not m:
        raise RagError(f"extractor model returned no JSON object: {content[:200]!r}")
    try:
        data = json.loads(m.group(0))
    except json.JSONDecodeError as exc:
        raise RagError(f"extractor model returned invalid JSON: {exc}") from None
    out = Extraction()
    for name in data.get("entities") or []:
        if isinstance(name, str) and entity_key(name):
            out.entities.setdefault(entity_key(name), name.strip())
    for triple in data.get("relations") or []:
        if (
            isinstance(triple, list | tuple)
            and len(triple) == 3
            and all(isinstance(x, str) for x in triple)
        ):
            h, r, t = (x.strip() for x in triple)
            kh, kt = entity_key(h), entity_key(t)
            if kh and kt and kh != kt:
                out.entities.setdefault(kh, h)
                out.entities.setdefault(kt, t)
                out.relations.append((kh, r.lower() or "related to", kt))
    return out


class LLMExtractor:
    """JSON triples from a chat model behind an OpenAI-compatible URL."""

    def __init__(self, cfg: ExtractorConfig) -> None:
        if not cfg.base_url or not cfg.model:
            raise RagError(
                "extractor.kind 'llm' needs extractor.base_url and extractor.model.",
                fix="Point it at the gateway (http://127.0.0.1:8000/v1) and a served model.",
            )
        self.cfg = cfg
        self._offline = OfflineExtractor()

    def _call(self, text: str) -> Extraction:
        import httpx

        headers = {"Authorization": f"Bearer {self.cfg.api_key}"} if self.cfg.api_key else {}
        url = self.cfg.base_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        body = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": _PROMPT + text}],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        try:
            resp = httpx.post(url, json=body, headers=headers, timeout=self.cfg.timeout_s)
            resp.raise_for_status()
            content = resp.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise RagError(f"extractor model call to {url} failed: {exc}") from None
        return parse_llm_triples(content)

    def extract(self, texts: list[str], titles: list[str]) -> list[Extraction]:
        out = []
        for text, title in zip(texts, titles, strict=True):
            try:
                ex = self._call(text)
            except RagError:
                if not self.cfg.fallback_offline:
                    raise
                ex = self._offline.extract_one(text, title)
            if title and entity_key(title):
                ex.entities.setdefault(entity_key(title), title)
            out.append(ex)
        return out


def make_extractor(cfg: ExtractorConfig) -> Extractor:
    return LLMExtractor(cfg) if cfg.kind == "llm" else OfflineExtractor()
