"""Pluggable entity/relation extractors that feed the knowledge graph.

- :class:`OfflineExtractor` needs no model: proper-noun spans (capitalized word runs,
  with "of"/"de"/"von"... allowed inside) are entities, the document title is an
  entity of every chunk of its document, and entities next to each other in a
  sentence are related by the words between them. Crude, but it links a document that
  mentions "Ilse Marquand" to the document about her, which is what multi-hop
  retrieval needs.
- :class:`LLMExtractor` asks a chat model (:mod:`lumos_ray.actors.models`: an
  OpenAI-compatible server such as the gateway, or any ``ChatModel``) for JSON triples.

Both return :class:`Extraction` per chunk; entity keys are normalized names so the
same entity found in two documents (or on two shards) is one node.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from lumos_ray.actors.models import ChatModel, OpenAIChatModel
from lumos_ray.errors import LumosError, RagError
from lumos_ray.rag._config import ExtractorConfig
from lumos_ray.rag._entities import _PAREN, coreference, entity_key

__all__ = [
    "Extraction",
    "Extractor",
    "LLMExtractor",
    "OfflineExtractor",
    "entity_key",
    "make_extractor",
    "parse_llm_triples",
]

log = logging.getLogger(__name__)


@dataclass
class Extraction:
    """Entities (key → display name) and (head_key, relation, tail_key) triples."""

    entities: dict[str, str] = field(default_factory=dict)
    relations: list[tuple[str, str, str]] = field(default_factory=list)


class Extractor(Protocol):
    def extract(self, texts: list[str], titles: list[str]) -> list[Extraction]: ...


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
        return _resolve(out, title_key)

    def extract(self, texts: list[str], titles: list[str]) -> list[Extraction]:
        return [self.extract_one(t, ti) for t, ti in zip(texts, titles, strict=True)]


def _resolve(ex: Extraction, title_key: str) -> Extraction:
    """Fold coreferent short names ("Pell" after "Osric Pell") into the full entity."""
    alias = coreference(list(ex.entities), title_key)
    if not alias:
        return ex
    out = Extraction()
    for key, name in ex.entities.items():
        if key not in alias:
            out.entities.setdefault(key, name)
    for key in alias.values():  # the full name may be only the title
        out.entities.setdefault(key, ex.entities.get(key, key))
    seen: set[tuple[str, str, str]] = set()
    for h, rel, t in ex.relations:
        h, t = alias.get(h, h), alias.get(t, t)
        if h != t and (h, rel, t) not in seen:
            seen.add((h, rel, t))
            out.relations.append((h, rel, t))
    return out


_PROMPT = (
    "Extract the named entities and the relations between them from the text. Answer "
    'with JSON only: {"entities": ["name", ...], "relations": [["head", "relation", '
    '"tail"], ...]}.\n\nText:\n'
)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def _json_object(content: str) -> dict[str, Any]:
    """The first JSON object in a model's answer: bare, fenced, or inside prose."""
    text = content.strip()
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    decoder = json.JSONDecoder()
    last_error: json.JSONDecodeError | None = None
    for cand in candidates:
        try:
            data = json.loads(cand)
        except json.JSONDecodeError as exc:
            last_error = exc
        else:
            if isinstance(data, dict):
                return data
    # Prose around the object: try each '{' until one starts a complete object.
    for m in re.finditer(r"\{", text):
        try:
            data, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError as exc:
            last_error = last_error or exc
            continue
        if isinstance(data, dict):
            return data
    if "{" not in text:
        raise RagError(f"extractor model returned no JSON object: {content[:200]!r}")
    raise RagError(f"extractor model returned invalid JSON ({last_error}): {content[:200]!r}")


def _triple(item: Any) -> tuple[str, str, str] | None:
    """["head", "relation", "tail"] or {"head"/"subject"/"source", "relation"/...}."""
    if isinstance(item, dict):
        get = lambda *names: next((item[n] for n in names if n in item), None)  # noqa: E731
        item = [
            get("head", "subject", "source", "from"),
            get("relation", "predicate", "type", "label"),
            get("tail", "object", "target", "to"),
        ]
    if isinstance(item, list | tuple) and len(item) == 3 and all(isinstance(x, str) for x in item):
        h, r, t = (x.strip() for x in item)
        return h, r, t
    return None


def parse_llm_triples(content: str) -> Extraction:
    """Parse a chat model's answer into an :class:`Extraction`.

    Accepts the JSON object bare, in a Markdown fence, or wrapped in prose; relations
    as ``[head, relation, tail]`` lists or ``{"head", "relation", "tail"}`` objects.
    Raises :class:`RagError` when there is no JSON object or it has the wrong shape.
    """
    data = _json_object(content)
    entities = data.get("entities") or []
    relations = data.get("relations") or []
    if not isinstance(entities, list) or not isinstance(relations, list):
        raise RagError(
            "extractor model answered JSON without the expected lists: "
            f'"entities" is {type(entities).__name__}, "relations" is '
            f"{type(relations).__name__}: {content[:200]!r}"
        )
    out = Extraction()
    for name in entities:
        if isinstance(name, dict):  # {"name": ..., "type": ...}
            name = name.get("name")
        if isinstance(name, str) and entity_key(name):
            out.entities.setdefault(entity_key(name), name.strip())
    for item in relations:
        triple = _triple(item)
        if triple is None:
            continue
        h, r, t = triple
        kh, kt = entity_key(h), entity_key(t)
        if kh and kt and kh != kt:
            out.entities.setdefault(kh, h)
            out.entities.setdefault(kt, t)
            out.relations.append((kh, r.lower() or "related to", kt))
    return out


class LLMExtractor:
    """JSON triples from a chat model (:class:`~lumos_ray.actors.models.ChatModel`).

    By default the model is an :class:`~lumos_ray.actors.models.OpenAIChatModel` built
    from the config (``base_url``, ``model``, ``api_key_env``, ``timeout_s``) and asked for
    JSON mode (``response_format: json_object``, temperature 0). Any other chat model
    can be passed as ``model=`` (e.g. a :class:`~lumos_ray.testing.FunctionModel` in
    tests, or an in-process model): it gets the same prompt, and its answer is parsed
    with :func:`parse_llm_triples`.

    :meth:`extract` is synchronous (the router calls it from a worker thread) and runs
    the chunk calls of one batch concurrently (``cfg.concurrency``) on a private event
    loop; from async code use :meth:`aextract`. A chunk whose call or answer fails is
    extracted offline when ``cfg.fallback_offline`` (counted in :attr:`fallbacks`,
    the last reason in :attr:`last_error`); otherwise the :class:`RagError` is raised.
    """

    def __init__(self, cfg: ExtractorConfig | None = None, *, model: ChatModel | None = None):
        cfg = cfg if cfg is not None else ExtractorConfig(kind="llm")
        if model is None:
            if not cfg.base_url or not cfg.model:
                raise RagError(
                    "extractor.kind 'llm' needs extractor.base_url and extractor.model "
                    "(or a chat model passed as LLMExtractor(cfg, model=...)).",
                    fix="Point it at the gateway (http://127.0.0.1:8000/v1) and a served "
                    "chat model, e.g. extractor: {kind: llm, base_url: "
                    "http://127.0.0.1:8000/v1, model: lumos-tiny}.",
                )
            model = OpenAIChatModel(
                cfg.model,
                cfg.base_url,
                cfg.api_key,
                api_key_env=cfg.api_key_env,
                timeout_s=cfg.timeout_s,
                extra_body=self._request_options(cfg),
            )
        self.cfg = cfg
        self.model = model
        self.fallbacks = 0
        self.last_error: RagError | None = None
        self._offline = OfflineExtractor()

    @staticmethod
    def _request_options(cfg: ExtractorConfig) -> dict[str, Any]:
        body: dict[str, Any] = {"temperature": 0}
        if cfg.json_mode:
            body["response_format"] = {"type": "json_object"}
        if cfg.max_tokens:
            body["max_tokens"] = cfg.max_tokens
        return body

    def _where(self, model: ChatModel) -> str:
        url = getattr(model, "base_url", None)
        return f"chat model {model.name!r}" + (f" at {url}" if url else "")

    async def _call(self, model: ChatModel, text: str) -> Extraction:
        messages = [{"role": "user", "content": _PROMPT + text}]
        try:
            resp = await asyncio.wait_for(model.chat(messages), timeout=self.cfg.timeout_s)
        except TimeoutError:
            raise RagError(
                f"extractor {self._where(model)} did not answer within {self.cfg.timeout_s} s.",
                fix="Raise extractor.timeout_s, or check that the model server is up "
                "(`lumos serve status`).",
            ) from None
        except Exception as exc:  # any failing model: reported (or fallen back from) alike
            reason = exc.message if isinstance(exc, LumosError) else f"{type(exc).__name__}: {exc}"
            raise RagError(
                f"extractor call to {self._where(model)} failed: {reason}",
                fix="Check extractor.base_url, extractor.model and extractor.api_key_env, and "
                "that the server is up (`lumos serve status`); or set extractor.kind: "
                "offline.",
            ) from None
        content = resp.content or ""
        if not content.strip():
            raise RagError(
                f"extractor {self._where(model)} returned an empty answer "
                f"(finish_reason={resp.finish_reason!r}).",
                fix="Check that extractor.model is a chat model that answers text, or set "
                "extractor.fallback_offline: true.",
            )
        try:
            return parse_llm_triples(content)
        except RagError as exc:
            if resp.finish_reason == "length":
                raise RagError(
                    f"extractor {self._where(model)} was cut off at max_tokens before its "
                    f"JSON was complete: {exc.message}",
                    fix="Raise extractor.max_tokens, or use smaller chunks.",
                ) from None
            raise RagError(
                f"{exc.message} (from {self._where(model)})",
                fix="Use a model that follows JSON instructions (extractor.json_mode: true "
                "asks an OpenAI-compatible server for a JSON object), or set "
                "extractor.fallback_offline: true.",
            ) from None

    async def _one(self, model: ChatModel, sem: asyncio.Semaphore, text: str, title: str):
        async with sem:
            try:
                ex = await self._call(model, text)
            except RagError as exc:
                if not self.cfg.fallback_offline:
                    raise
                self.fallbacks += 1
                self.last_error = exc
                log.warning("LLM extraction failed, using the offline extractor: %s", exc)
                ex = self._offline.extract_one(text, title)
        if title and entity_key(title):
            ex.entities.setdefault(entity_key(title), _PAREN.sub("", title).strip() or title)
        return ex

    async def aextract(self, texts: list[str], titles: list[str]) -> list[Extraction]:
        """Async :meth:`extract`, for callers already on an event loop."""
        if len(texts) != len(titles):
            raise ValueError("texts and titles must have the same length")
        # An OpenAI client is bound to the loop it was made on: a copy per run gets its own.
        model = copy.copy(self.model) if isinstance(self.model, OpenAIChatModel) else self.model
        sem = asyncio.Semaphore(self.cfg.concurrency)
        try:
            return list(
                await asyncio.gather(
                    *(self._one(model, sem, t, ti) for t, ti in zip(texts, titles, strict=True))
                )
            )
        finally:
            if model is not self.model:
                await model.aclose()

    def extract(self, texts: list[str], titles: list[str]) -> list[Extraction]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.aextract(texts, titles))
        raise RagError(
            "LLMExtractor.extract() was called on a running event loop; it would block it.",
            fix="Use `await extractor.aextract(...)`, or call extract() in a worker thread "
            "(`await asyncio.to_thread(extractor.extract, texts, titles)`).",
        )


def make_extractor(cfg: ExtractorConfig, model: ChatModel | None = None) -> Extractor:
    """The extractor ``cfg.kind`` names; ``model`` overrides the LLM extractor's model."""
    return LLMExtractor(cfg, model=model) if cfg.kind == "llm" else OfflineExtractor()
