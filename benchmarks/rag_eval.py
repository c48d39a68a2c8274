"""Answer recall@k per query mode over any JSONL QA set, through the real RAG pool.

Input (the format of /work/shared/data/hotpotqa_sample, which is any dataset's
natural shape):
  --questions Q.jsonl   {"question", "answer", "supporting_docs": [doc ids], ...}
  --docs D.jsonl        {"doc_id", "title"?, "text"}   (or --docs-dir with files)

Reports, per mode (naive = the baseline) and k: answer recall (the answer string in
the top-k chunks; yes/no answers are left out) and supporting-doc recall (every
supporting doc among the top-k chunks' documents), plus each mode's ratio to naive.
When questions carry a ``hops`` field with more than one value (the synthetic
multi-hop set), answer recall@k is also broken down by hop count.

  .venv/bin/python benchmarks/rag_eval.py \
      --questions /work/shared/data/hotpotqa_sample/questions.jsonl \
      --docs /work/shared/data/hotpotqa_sample/docs.jsonl --shards 2 --keep

``--in-process`` runs the same retrieval code on in-process shard states (no Ray,
``lumos_ray.rag._local.LocalCollection``); ``--cache FILE`` keeps the embedded chunks
between such runs (the embedding is most of the time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _read_jsonl(path: str) -> list[dict]:
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{path}:{n}: invalid JSON: {exc}") from None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--questions", required=True)
    ap.add_argument("--docs", help="JSONL of {doc_id, title, text}")
    ap.add_argument("--docs-dir", help="a folder of txt/md/html/pdf files instead of --docs")
    ap.add_argument("--collection", default="eval")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--modes", default="naive,local,global,hybrid,multihop,mix")
    ap.add_argument("--in-process", action="store_true", help="no Ray: in-process shards")
    ap.add_argument("--cache", help="--in-process: pickle of the embedded chunks (reused)")
    ap.add_argument("--k", default="3,5,10")
    ap.add_argument(
        "--query-config",
        default="{}",
        help="QueryConfig fields as JSON, e.g. '{\"max_hops\": 2}' (a new collection only)",
    )
    ap.add_argument("--limit", type=int, default=0, help="first N questions only")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the collection")
    ap.add_argument("--out", help="write the full result as JSON here")
    args = ap.parse_args()

    questions = _read_jsonl(args.questions)[: args.limit or None]
    modes = args.modes.split(",")
    ks = [int(k) for k in args.k.split(",")]
    if args.in_process:
        coll, ingest, runtime = _local_collection(args), {}, None
    else:
        from lumos_ray import runtime
        from lumos_ray.rag import CollectionConfig, Document, RagCollection

        runtime.connect()
        coll = RagCollection.open(
            args.collection,
            config=CollectionConfig(
                name=args.collection,
                num_shards=args.shards,
                query=json.loads(args.query_config),
            ),
            num_shards=args.shards,
        )
        ingest = {}
        if coll.stats()["documents"] == 0:
            t0 = time.perf_counter()
            if args.docs:
                rows = _read_jsonl(args.docs)
                docs = [
                    Document(doc_id=r["doc_id"], title=r.get("title", ""), text=r["text"])
                    for r in rows
                ]
                report = coll.upsert(docs, batch_docs=64)
            else:
                report = coll.ingest([args.docs_dir], batch_docs=64)
            secs = time.perf_counter() - t0
            ingest = {
                "documents": report.documents,
                "chunks": report.chunks,
                "seconds": round(secs, 1),
                "chunks_per_s": round(report.chunks / secs, 1),
                "skipped": report.skipped,
            }
            print(
                f"ingested {report.documents} docs / {report.chunks} chunks in {secs:.1f}s "
                f"({report.chunks / secs:.1f} chunks/s, real embeddings + extraction)"
            )
    stats = coll.stats() if not args.in_process else _local_stats(coll)
    kmax = max(ks)
    hop_values = sorted({q.get("hops") for q in questions if q.get("hops") is not None})
    kk_main = ks[1] if len(ks) > 1 else ks[0]
    results: dict[str, dict] = {}
    for mode in modes:
        ans_hits = {k: 0 for k in ks}
        by_hops = {h: [0, 0] for h in hop_values}  # answerable, found @k_main
        doc_hits = {k: 0 for k in ks}
        n_ans = 0
        lat = []
        for q in questions:
            t0 = time.perf_counter()
            hits = coll.query(q["question"], mode, kmax)
            lat.append(time.perf_counter() - t0)
            answer = str(q.get("answer", "")).strip().lower()
            matchable = answer and answer not in ("yes", "no")
            n_ans += bool(matchable)
            gold = set(q.get("supporting_docs", []))
            for k in ks:
                top = hits[:k]
                if matchable and any(answer in h.text.lower() for h in top):
                    ans_hits[k] += 1
                    if k == kk_main and q.get("hops") in by_hops:
                        by_hops[q["hops"]][1] += 1
                if gold and gold <= {h.doc_id for h in top}:
                    doc_hits[k] += 1
            if matchable and q.get("hops") in by_hops:
                by_hops[q["hops"]][0] += 1
        lat.sort()
        results[mode] = {
            "answer_recall": {k: round(100 * ans_hits[k] / max(n_ans, 1), 1) for k in ks},
            "support_recall": {k: round(100 * doc_hits[k] / len(questions), 1) for k in ks},
            "answerable": n_ans,
            "p50_ms": round(1000 * lat[len(lat) // 2], 1),
            "answer_recall_by_hops": {
                h: round(100 * f / max(n, 1), 1) for h, (n, f) in by_hops.items()
            },
        }
    base = results.get("naive")
    print(f"\n{len(questions)} questions, {stats['chunks']} chunks, {args.shards} shard(s)")
    header = " | ".join(f"ans@{k}" for k in ks) + " | " + " | ".join(f"docs@{k}" for k in ks)
    print(f"| mode | {header} | ans@{ks[1] if len(ks) > 1 else ks[0]} vs naive | p50 ms |")
    print("|" + "---|" * (2 * len(ks) + 3))
    for mode, r in results.items():
        kk = ks[1] if len(ks) > 1 else ks[0]
        ratio = (
            f"{r['answer_recall'][kk] / base['answer_recall'][kk]:.2f}x"
            if base and base["answer_recall"][kk]
            else "-"
        )
        cells = [f"{r['answer_recall'][k]:.1f}" for k in ks] + [
            f"{r['support_recall'][k]:.1f}" for k in ks
        ]
        print(f"| {mode} | " + " | ".join(cells) + f" | {ratio} | {r['p50_ms']} |")
    if len(hop_values) > 1:
        kk = ks[1] if len(ks) > 1 else ks[0]
        counts = {h: sum(q.get("hops") == h for q in questions) for h in hop_values}
        print(f"\nanswer recall@{kk} by hops ({counts})")
        print("| mode | " + " | ".join(f"{h} hops" for h in hop_values) + " |")
        print("|" + "---|" * (len(hop_values) + 1))
        for mode, r in results.items():
            cells = [f"{r['answer_recall_by_hops'][h]:.1f}" for h in hop_values]
            print(f"| {mode} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"ingest": ingest, "stats": stats, "results": results}, indent=2, default=str
            )
        )
    if runtime is not None:
        if not args.keep:
            coll.drop()
        runtime.shutdown()


def _local_collection(args: argparse.Namespace):
    """In-process shards (no Ray) holding the docs, embedded once and cached."""
    import pickle

    from lumos_ray.rag import CollectionConfig, Document
    from lumos_ray.rag._local import LocalCollection

    coll = LocalCollection(
        CollectionConfig(
            name=args.collection, num_shards=args.shards, query=json.loads(args.query_config)
        )
    )
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        # The cache holds the embeddings; entities are extracted again with the current
        # extractor (cheap), so extractor changes never read stale entities.
        batch = pickle.loads(cache.read_bytes())
        from lumos_ray.rag._extract import OfflineExtractor

        ex = OfflineExtractor()
        for rec in batch.chunks:
            fresh = ex.extract_one(rec.text, rec.title)
            rec.entities, rec.relations = fresh.entities, fresh.relations
    else:
        if not args.docs:
            raise SystemExit("--in-process needs --docs (a JSONL file)")
        rows = _read_jsonl(args.docs)
        docs = [
            Document(doc_id=r["doc_id"], title=r.get("title", ""), text=r["text"]) for r in rows
        ]
        t0 = time.perf_counter()
        batch = coll.prepare(docs)
        print(f"embedded {len(batch.chunks)} chunks in {time.perf_counter() - t0:.1f}s")
        if cache is not None:
            cache.write_bytes(pickle.dumps(batch))
    coll.upsert_prepared(batch)
    return _QueryAdapter(coll)


class _QueryAdapter:
    """LocalCollection.query with the router's query-vector cache (modes share it)."""

    def __init__(self, coll) -> None:
        self.coll = coll
        self.cache: dict[str, object] = {}

    def query(self, text: str, mode: str, k: int):
        from lumos_ray.rag import SearchHit

        if text not in self.cache:
            self.cache[text] = self.coll._pipeline()[0].embed([text])[0]
        return [SearchHit(**h) for h in self.coll.query_vector(self.cache[text], text, mode, k)]


def _local_stats(adapter: _QueryAdapter) -> dict:
    return {"chunks": sum(len(s.chunks) for s in adapter.coll.shards)}


if __name__ == "__main__":
    main()
