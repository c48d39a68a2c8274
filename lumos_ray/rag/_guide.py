"""The LLM-guided multi-hop mode (``mode="guided"``): a chat model steers the beam.

The lexical multi-hop search (``_multihop.plan``) cannot tell a link whose sentence
paraphrases the question ("was taught by" for "the mentor of") from the other links of
a chunk. When a collection configures a model (``guide.model``: a served model through
the OpenAI-compatible client of :mod:`lumos_ray.actors.models`, or any provider a
``ModelConfig`` names), the same search asks it two kinds of question:

* **follow** (once per hop): the question, the best paths so far (each path's last
  chunk) and up to ``guide.candidates`` links with the sentence that names each; the
  model answers ``{"follow": [link numbers], "done": bool}``. Chosen links are fetched
  and every hop the model chose adds ``guide.guide_weight`` to its path's score; the
  lexical links are still followed, so a wrong pick costs a beam slot, not the answer.
  ``done`` stops the expansion (a path already holds the answer).
* **pick** (once at the end): the best ``guide.pick_top`` chunks; the model answers
  ``{"answer_in": [passage numbers]}`` and those go first, in its order.

At most ``guide.max_calls`` calls per query, each bounded by ``guide.timeout_s``.
A call that fails or an answer that does not parse is skipped (the search goes on as
the lexical multi-hop search, counted in :attr:`Guide.failures`) when
``guide.fallback``, otherwise the query fails with a :class:`RagError` that says what
went wrong. The default modes never call a model.

Prompts and parsing are pure functions (the search stays sans-I/O); :class:`Guide` is
the I/O half that the router (or an in-process caller) hands to the search as ``ask``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Sequence
from typing import Any

from lumos_ray.errors import LumosError, RagError
from lumos_ray.rag._config import GuideConfig
from lumos_ray.rag._lexical import sentence_naming

__all__ = [
    "Guide",
    "follow_prompt",
    "parse_follow",
    "parse_pick",
    "pick_prompt",
    "round_robin",
]

log = logging.getLogger(__name__)

_SYSTEM = (
    "You help answer a question by walking through linked documents. Each step you see "
    "the documents reached so far and the links (named entities) you can follow next. "
    "Answer with JSON only."
)
_TEXT_CHARS = 500  # of a chunk shown to the model
_SENTENCE_CHARS = 240


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def round_robin(per_path: Sequence[Sequence[Any]], limit: int) -> list[Any]:
    """Items of several ranked lists, interleaved (every list's first, then every
    list's second, ...), without repeating a (path, entity) pair, at most ``limit``."""
    out: list[Any] = []
    seen: set[tuple[int, str]] = set()
    depth = max((len(x) for x in per_path), default=0)
    for i in range(depth):
        for lst in per_path:
            if i < len(lst) and len(out) < limit:
                item = lst[i]
                key = (id(item[0]), item[1])
                if key not in seen:
                    seen.add(key)
                    out.append(item)
    return out


def follow_prompt(
    query: str, shown: Sequence[Any], views: dict[str, dict[str, Any]]
) -> list[dict[str, str]]:
    """Messages asking which links to follow. ``shown``: (path, entity key, relation
    terms) triples; a path has ``chunks`` (ids into ``views``) and ``via`` (names)."""
    path_no: dict[int, int] = {}
    lines = [f"Question: {query}", "", "Documents reached (the end of each path):"]
    for p, _, _ in shown:
        if id(p) in path_no:
            continue
        path_no[id(p)] = n = len(path_no) + 1
        end = views[p.chunks[-1]]
        trail = " > ".join([views[p.chunks[0]]["title"], *p.via]) if p.via else end["title"]
        lines.append(f"[P{n}] {trail}")
        lines.append(f"    {end['title']}: {_clip(end['text'], _TEXT_CHARS)}")
    lines += ["", "Links you can follow next:"]
    for i, (p, key, _) in enumerate(shown, 1):
        end = views[p.chunks[-1]]
        name = end["entities"].get(key, key)
        sentence = _clip(sentence_naming(end["text"], name) or "", _SENTENCE_CHARS)
        lines.append(f'{i}. (P{path_no[id(p)]}) {name}: "{sentence}"')
    lines += [
        "",
        'Reply with JSON only: {"follow": [numbers of the links that lead toward the '
        'answer, best first], "done": false}. If a document above already states the '
        'answer, reply {"follow": [], "done": true}.',
    ]
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def pick_prompt(query: str, hits: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages asking which passages answer the question."""
    lines = [f"Question: {query}", "", "Passages:"]
    for i, h in enumerate(hits, 1):
        lines.append(f"{i}. [{h['title']}] {_clip(h['text'], _TEXT_CHARS)}")
    lines += [
        "",
        'Reply with JSON only: {"answer_in": [numbers of the passages that state the '
        "answer, best first]}.",
    ]
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def _numbers(value: Any, n: int) -> list[int]:
    """1-based numbers (ints or digit strings) → distinct 0-based indexes below n."""
    if isinstance(value, (int, str)):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of numbers, got {type(value).__name__}")
    out: list[int] = []
    for v in value:
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v.strip())
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"expected numbers, got {v!r}")
        if 1 <= v <= n and v - 1 not in out:
            out.append(v - 1)
    return out


def _parse(answer: str | None, key: str, n: int, guide: GuideConfig, what: str) -> Any:
    """The JSON object of an answer, or None when it is unusable and fallback allows."""
    from lumos_ray.rag._extract import _json_object

    if answer is None:  # the call failed (Guide.ask already decided to go on)
        return None
    try:
        data = _json_object(answer)
        return data, _numbers(data.get(key, []), n)
    except (RagError, ValueError) as exc:
        reason = exc.message if isinstance(exc, RagError) else str(exc)
        if not guide.fallback:
            raise RagError(
                f"The guide model's {what} answer is not the expected JSON ({reason}): "
                f"{answer[:200]!r}",
                fix="Use an instruction-following chat model for guide.model, or set "
                "guide.fallback: true to continue without its answer.",
            ) from None
        log.warning("guided search: ignoring the model's %s answer: %s", what, reason)
        return None


def parse_follow(answer: str | None, n: int, guide: GuideConfig) -> tuple[list[int], bool]:
    """(0-based link indexes to follow, at most ``guide.follow``; done)."""
    got = _parse(answer, "follow", n, guide, "follow")
    if got is None:
        return [], False
    data, picks = got
    return picks[: guide.follow], bool(data.get("done")) and not picks


def parse_pick(answer: str | None, n: int, guide: GuideConfig) -> list[int]:
    """0-based indexes of the passages the model says answer the question."""
    got = _parse(answer, "answer_in", n, guide, "pick")
    return [] if got is None else got[1]


class Guide:
    """The model side of a guided search: builds the chat model from ``guide.model``
    (or takes one) and answers the search's ``ask`` requests, bounded in time."""

    def __init__(self, cfg: GuideConfig, model: Any = None) -> None:
        self.cfg = cfg
        self.calls = 0
        self.failures = 0
        self.last_error: str | None = None
        self.model = model if model is not None else self._build(cfg)

    @staticmethod
    def _build(cfg: GuideConfig) -> Any:
        from lumos_ray.actors.models import ModelConfig, build_model

        if cfg.model is None:
            raise RagError(
                "Query mode 'guided' needs a chat model, and this collection has none "
                "(guide.model is not set).",
                fix="Set guide.model in the collection config, e.g. guide: {model: "
                "{provider: openai, name: MODEL, base_url: http://127.0.0.1:8000/v1}} "
                "(a served model), or use mode 'multihop' (no model).",
            )
        mc = ModelConfig.model_validate(cfg.model)
        if mc.provider == "openai":
            # Deterministic, short answers unless the config says otherwise.
            mc.extra_body = {"temperature": 0, "max_tokens": cfg.max_tokens, **mc.extra_body}
        try:
            return build_model(mc)
        except Exception as exc:
            reason = exc.message if isinstance(exc, LumosError) else f"{type(exc).__name__}: {exc}"
            raise RagError(
                f"Cannot build the guide model {cfg.model!r}: {reason}",
                fix="Check guide.model (provider, name, base_url; a function provider's "
                "'module:attr' must be importable where the collection's router runs).",
            ) from None

    def bind(self) -> Guide:
        """A copy for one event loop (an OpenAI client is bound to the loop that opened
        it: callers that run each query under its own ``asyncio.run`` use a copy)."""
        other = copy.copy(self)
        other.model = copy.copy(self.model)
        return other

    async def aclose(self) -> None:
        close = getattr(self.model, "aclose", None)
        if close is not None:
            await close()

    async def ask(self, messages: list[dict[str, Any]]) -> str | None:
        """The model's answer text; ``None`` when the call failed and fallback is on."""
        self.calls += 1
        name = getattr(self.model, "name", type(self.model).__name__)
        where = f"guide model {name!r}" + (
            f" at {self.model.base_url}" if getattr(self.model, "base_url", None) else ""
        )
        try:
            resp = await asyncio.wait_for(self.model.chat(messages), timeout=self.cfg.timeout_s)
            return resp.content or ""
        except TimeoutError:
            reason = f"{where} did not answer within {self.cfg.timeout_s:g} s"
        except Exception as exc:  # any failing model is reported (or skipped) alike
            detail = exc.message if isinstance(exc, LumosError) else f"{type(exc).__name__}: {exc}"
            reason = f"call to {where} failed: {detail}"
        if not self.cfg.fallback:
            raise RagError(
                f"Guided search: {reason}.",
                fix="Check guide.model (and that the server is up: `lumos serve status`), "
                "raise guide.timeout_s, or set guide.fallback: true.",
            )
        self.failures += 1
        self.last_error = reason
        log.warning("guided search continues without the model: %s", reason)
        return None
