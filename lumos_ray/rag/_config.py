"""Pydantic models for RAG collections and the objects that cross actor boundaries.

Everything a collection needs to be rebuilt (shard count, chunking, embedding, index
and extractor settings, tenant) is in :class:`CollectionConfig`, which is written next
to the snapshots so a fresh process (a new embedded cluster, a restarted router) opens
the collection exactly as it was created. API keys are never part of it: a collection
names the environment variable that holds one (``api_key_env``), and a config with a
literal ``api_key`` is refused (:meth:`CollectionConfig.check_storable`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lumos_ray.errors import ConfigError
from lumos_ray.runtime import Placement

__all__ = [
    "SEARCH_MODES",
    "ChunkingConfig",
    "Citation",
    "CitationLink",
    "CollectionConfig",
    "Document",
    "EmbeddingConfig",
    "ExtractorConfig",
    "GuideConfig",
    "IndexConfig",
    "IngestReport",
    "QueryConfig",
    "SearchHit",
    "SearchMode",
]

SearchMode = Literal["naive", "local", "global", "hybrid", "multihop", "mix", "guided"]
#: Every query mode, in the order the docs list them.
SEARCH_MODES: tuple[str, ...] = (
    "naive",
    "local",
    "global",
    "hybrid",
    "multihop",
    "mix",
    "guided",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ChunkingConfig(BaseModel):
    """Recursive, token-counted chunking with overlap."""

    model_config = ConfigDict(extra="forbid")

    chunk_tokens: int = Field(default=160, ge=16, le=2048, description="Max tokens per chunk.")
    overlap_tokens: int = Field(default=32, ge=0, description="Tokens shared by neighbours.")
    tokenizer: Literal["regex", "model"] = Field(
        default="regex",
        description="regex: words and punctuation (fast, no model); model: the "
        "embedding model's own WordPiece tokenizer.",
    )


class EmbeddingConfig(BaseModel):
    """Which model turns text into vectors."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["minilm", "openai"] = "minilm"
    model: str = Field(default="all-MiniLM-L6-v2", description="Model name (openai backend).")
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"
    )
    api_key_env: str | None = Field(
        default=None,
        description="openai: name of the environment variable holding the API key, read "
        "where the embedder runs and sent only to base URLs that environment binds it to "
        "(default: $LUMOS_API_KEY, then $OPENAI_API_KEY, where bound).",
    )
    api_key: str | None = Field(
        default=None,
        description="openai: a literal API key, for an embedder built in code only: a "
        "collection refuses it (its config is stored); use api_key_env.",
    )
    batch_size: int = Field(default=64, ge=1, le=4096)
    dim: int = Field(default=384, ge=1)
    torch_threads: int = Field(
        default=1, ge=1, description="1 thread: 50 ms/query vs 1 s with 2 on a busy 2-core box."
    )
    title_prefix: bool = Field(
        default=True, description="Embed 'title\\ntext' so chunks keep their document's topic."
    )


class IndexConfig(BaseModel):
    """faiss index choice: exact below a size, HNSW above it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["auto", "flat", "hnsw"] = "auto"
    hnsw_threshold: int = Field(default=20_000, ge=1, description="auto: HNSW at this size.")
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_search: int = Field(default=64, ge=8)
    hnsw_ef_construction: int = Field(default=64, ge=8)
    faiss_threads: int = Field(default=1, ge=1, description="1 was 3-7x faster on 2 cores.")


class ExtractorConfig(BaseModel):
    """Entity/relation extractor: offline heuristics or an LLM through a chat API."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["offline", "llm"] = "offline"
    base_url: str | None = Field(default=None, description="llm: OpenAI-compatible base URL.")
    model: str | None = Field(default=None, description="llm: chat model name.")
    api_key_env: str | None = Field(
        default=None,
        description="llm: name of the environment variable holding the API key, read where "
        "the extractor runs and sent only to base URLs that environment binds it to "
        "(default: $LUMOS_API_KEY, then $OPENAI_API_KEY, where bound).",
    )
    api_key: str | None = Field(
        default=None,
        description="llm: a literal API key, for an extractor built in code only: a "
        "collection refuses it (its config is stored); use api_key_env.",
    )
    timeout_s: float = Field(default=60.0, gt=0, description="llm: per-chunk call timeout.")
    fallback_offline: bool = Field(
        default=True,
        description="llm: extract a chunk offline when its model call fails or its answer "
        "is not the expected JSON (False: raise the error).",
    )
    json_mode: bool = Field(
        default=True,
        description="llm: ask the server for a JSON object (response_format: json_object).",
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="llm: answer length cap (default: the server's)."
    )
    concurrency: int = Field(
        default=4, ge=1, le=64, description="llm: chunk calls in flight at once."
    )


class QueryConfig(BaseModel):
    """Knobs of the graph-aware modes. local/hybrid defaults were tuned on the HotpotQA
    sample; multihop/mix ones on the synthetic multi-hop set and checked on HotpotQA
    (benchmarks/RESULTS.md)."""

    model_config = ConfigDict(extra="forbid")

    seed_hits: int = Field(default=8, ge=1, description="Vector hits that seed the graph.")
    vector_weight: float = Field(default=0.4, ge=0, le=1, description="hybrid: λ·sim + (1-λ)·graph")
    seed_temperature: float = Field(
        default=0.02, gt=0, description="Seed weight = exp(-(best - score) / T)."
    )
    query_entity_weight: float = Field(
        default=1.0, ge=0, description="Seed weight of entities named in the query."
    )
    graph_power: float = Field(
        default=0.5, gt=0, le=1, description="Fusion uses (graph/max graph)^p."
    )
    damping: float = Field(default=0.5, gt=0, lt=1, description="PPR continuation probability.")
    ppr_iters: int = Field(default=20, ge=1)
    ppr_hops: int = Field(default=2, ge=1, le=4, description="PPR subgraph radius.")
    max_subgraph: int = Field(default=2000, ge=10, description="Nodes PPR may touch.")
    hub_degree: int = Field(default=200, ge=2, description="Entities in more chunks are hubs.")
    communities_top: int = Field(default=3, ge=1, description="global: communities searched.")
    # -- multihop / mix (beam search over entity links; see _multihop.py) ----------
    max_hops: int = Field(
        default=3,
        ge=0,
        le=6,
        description="multihop: links followed at most (3 = 4-document chains).",
    )
    beam_width: int = Field(default=8, ge=1, le=64, description="multihop: paths kept per hop.")
    link_fanout: int = Field(
        default=4, ge=1, le=32, description="multihop: entities followed from each path end."
    )
    chunks_per_entity: int = Field(
        default=3, ge=1, le=32, description="multihop: chunks fetched per followed entity."
    )
    node_budget: int = Field(
        default=256, ge=8, le=20_000, description="multihop: chunks examined per query, at most."
    )
    hop_vector_weight: float = Field(
        default=0.5, ge=0, le=5, description="multihop: weight of a path's mean cosine."
    )
    hop_link_weight: float = Field(
        default=0.5,
        ge=0,
        le=5,
        description="multihop: weight of the question words in the sentences that link a path "
        "('built by X' for 'the company that built').",
    )
    hop_penalty: float = Field(
        default=0.02, ge=0, le=1, description="multihop: score a hop must earn to be worth taking."
    )
    blind_hop_penalty: float = Field(
        default=0.1,
        ge=0,
        le=5,
        description="multihop: extra cost of a hop whose linking sentence has no new "
        "question word (a guess, not a followed relation).",
    )
    mention_hop_penalty: float = Field(
        default=0.3,
        ge=0,
        le=5,
        description="multihop: cost of following an entity with no page of its own to "
        "another chunk that names it (mostly generic names in real text).",
    )
    anchor_weight: float = Field(
        default=0.3,
        ge=0,
        le=5,
        description="multihop: bonus of a path that starts at the page of an entity the "
        "question names (where the question says the chain begins).",
    )
    slot_skip_penalty: float = Field(
        default=0.2,
        ge=0,
        le=5,
        description="multihop: cost of each relation of the question a path's links jump "
        "over (see _lexical.relation_slots; 0: links may follow the question's relations in "
        "any order).",
    )
    early_term_weight: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="multihop: credit for a question term found only earlier in a path than "
        "the relation it belongs to (it is about another entity of the chain; 1: order-free "
        "coverage).",
    )
    mix_hybrid_weight: float = Field(
        default=0.3,
        ge=0,
        le=10,
        description="mix: weight of hybrid's ranks (multihop's is 1; 0.5 before the "
        "relation-order scoring made multihop's own ranking stronger).",
    )
    mix_rrf_k: int = Field(
        default=10, ge=1, le=1000, description="mix: reciprocal-rank-fusion constant."
    )


class GuideConfig(BaseModel):
    """The LLM-guided multi-hop mode (``mode="guided"``): a chat model chooses which
    links the search follows and which chunks answer the question (``_guide.py``).
    Off unless ``model`` is set; every other mode never calls a model."""

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] | None = Field(
        default=None,
        description="A ModelConfig (lumos_ray.actors.models): {provider: openai, name: "
        "MODEL, base_url: http://127.0.0.1:8000/v1, api_key_env: ENV_VAR} for a served "
        "model, or provider function/scripted/test. Unset: mode 'guided' is refused.",
    )
    max_calls: int = Field(
        default=4, ge=1, le=16, description="Model calls per query at most (hops + final pick)."
    )
    candidates: int = Field(
        default=12, ge=2, le=40, description="Links shown to the model per hop, at most."
    )
    follow: int = Field(
        default=3, ge=1, le=16, description="Links the model may pick per hop, at most."
    )
    pick_top: int = Field(
        default=8,
        ge=0,
        le=40,
        description="Chunks shown to the model for the final pick (0: no final pick).",
    )
    guide_weight: float = Field(
        default=0.5,
        ge=0,
        le=5,
        description="Score bonus of every hop the model chose (its links win over lexical "
        "ones; lexical links are still followed, so a wrong pick costs recall at most "
        "a beam slot).",
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="Per model call.")
    max_tokens: int = Field(default=256, ge=16, le=4096, description="Answer length cap.")
    fallback: bool = Field(
        default=True,
        description="A failed call or an answer that does not parse: continue without the "
        "model (the lexical multi-hop search) instead of failing the query.",
    )

    @field_validator("model")
    @classmethod
    def _valid_model(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return None
        from lumos_ray.actors.models import ModelConfig

        try:
            cfg = ModelConfig.model_validate(v)
        except ValueError as exc:
            first = str(exc).splitlines()
            raise ValueError(
                "not a model config (" + " ".join(first[1:3]).strip() + "); expected e.g. "
                "{provider: openai, name: MODEL, base_url: http://127.0.0.1:8000/v1}"
            ) from None
        if cfg.provider == "openai" and not cfg.name:
            raise ValueError(
                "provider openai needs `name` (the served model, e.g. name: lumos-tiny)"
            )
        if cfg.provider == "function" and not cfg.function:
            raise ValueError("provider function needs `function: 'module:attr'`")
        if cfg.provider == "scripted" and not cfg.replies:
            raise ValueError("provider scripted needs `replies: [...]`")
        return cfg.model_dump(mode="json", exclude_defaults=True) | {"provider": cfg.provider}


class CollectionConfig(BaseModel):
    """One collection: its name, tenant, shard count and pipeline settings."""

    model_config = ConfigDict(extra="forbid")

    name: str
    tenant: str = "default"
    num_shards: int = Field(default=1, ge=1, le=64)
    snapshot_dir: str | None = Field(
        default=None, description="Default: <LUMOS_HOME>/rag/<tenant>/<name>."
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    extractor: ExtractorConfig = Field(default_factory=ExtractorConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    guide: GuideConfig = Field(default_factory=GuideConfig)
    placement: Placement | None = Field(
        default=None,
        description="Where the collection's router and shards run (custom resources, "
        "node labels, a node, spread across nodes); None = Ray's default. Kept with "
        "the collection: it applies when its actors are (re)started.",
    )

    @field_validator("name", "tenant")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                "must be 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter/digit"
            )
        return v

    def literal_keys(self) -> list[str]:
        """The fields that hold a literal API key (``embedding.api_key``,
        ``extractor.api_key``): a collection's config is stored next to its snapshots,
        so :meth:`check_storable` refuses them."""
        return [
            f"{section}.api_key"
            for section, part in (("embedding", self.embedding), ("extractor", self.extractor))
            if part.api_key
        ]

    def check_storable(self) -> None:
        """Raise a ConfigError if this config holds a literal API key: it would be
        written to ``collection.json``. The fix is ``api_key_env`` (the variable's name)."""
        fields = self.literal_keys()
        if fields:
            raise ConfigError(
                f"RAG collection {self.name!r}: {' and '.join(fields)} hold a literal API "
                "key, and a collection's config is stored in its collection.json; lumos "
                "never writes a key to disk.",
                fix="Put the key in an environment variable and name it instead: "
                + ", ".join(f"{f}_env: MY_KEY_VAR" for f in fields)
                + " (read where the collection's actors run, and sent only to base URLs "
                "that environment binds it to: LUMOS_MODEL_KEY_URLS='MY_KEY_VAR=BASE_URL').",
            )


class Document(BaseModel):
    """A document as ingested: its id is the key for update and delete."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str = Field(min_length=1)
    text: str
    title: str = ""
    source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class CitationLink(BaseModel):
    """One hop of a multi-hop citation: the sentence in ``from_chunk`` that names
    ``entity``, which the search followed to the next chunk."""

    model_config = ConfigDict(extra="forbid")

    from_chunk: str
    entity: str
    to_chunk: str
    sentence: str = ""


class Citation(BaseModel):
    """Where a hit comes from: the document, the chunk, and how retrieval got there.

    ``path`` is the hit's graph path (empty for a plain vector hit); ``links`` (multihop
    and mix) give, for every hop, the sentence that made the search follow it, so an
    answer built from the hit can quote its whole chain of evidence."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str
    chunk_id: str
    title: str = ""
    source: str = ""
    path: list[str] = Field(default_factory=list)
    links: list[CitationLink] = Field(default_factory=list)

    def render(self) -> str:
        """One line: ``[doc#chunk] <- entity <- [doc#chunk] ...`` (start of the chain last)."""
        if not self.links:
            return f"[{self.chunk_id}]" + (" via " + " > ".join(self.path) if self.path else "")
        parts = [f"[{self.links[0].from_chunk}]"]
        for link in self.links:
            parts += [link.entity, f"[{link.to_chunk}]"]
        return " > ".join(parts)


class SearchHit(BaseModel):
    """One result with its provenance: document, chunk and path through the graph."""

    model_config = ConfigDict(extra="forbid")

    chunk_id: str
    doc_id: str
    title: str
    text: str
    score: float
    mode: str
    shard: int
    source: str = ""
    vector_score: float = 0.0
    graph_score: float = 0.0
    entities: list[str] = Field(default_factory=list)
    path: list[str] = Field(
        default_factory=list,
        description="How the graph reached this chunk, e.g. ['chunk:A#0', 'entity:X', "
        "'chunk:B#0']; empty for a plain vector hit.",
    )
    community: int | None = None
    citation: Citation | None = Field(
        default=None, description="Document, chunk and graph path (filled in for every hit)."
    )

    @model_validator(mode="after")
    def _fill_citation(self) -> SearchHit:
        if self.citation is None:
            self.citation = Citation(
                doc_id=self.doc_id,
                chunk_id=self.chunk_id,
                title=self.title,
                source=self.source,
                path=list(self.path),
            )
        return self


class IngestReport(BaseModel):
    """What ingestion did: counts, and every file it skipped with the reason."""

    model_config = ConfigDict(extra="forbid")

    collection: str
    documents: int = 0
    chunks: int = 0
    replaced: int = 0
    skipped: list[dict[str, str]] = Field(default_factory=list)
    seconds: float = 0.0
