"""The synthetic multi-hop set's generator (``benchmarks/rag_multihop_data.py``): the
committed dev set is what the script writes, and the held-out ``alt`` variant shares
no invented name, no document sentence template and no question wording with it."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "data" / "multihop"


def _gen():
    spec = importlib.util.spec_from_file_location(
        "rag_multihop_data", ROOT / "benchmarks" / "rag_multihop_data.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _shape(text: str, names: list[str]) -> str:
    """A sentence with its names and numbers blanked: its template."""
    for n in sorted(names, key=len, reverse=True):
        text = text.replace(n, "{}")
    return re.sub(r"\d+", "{}", text)


def test_rag_multihop_set_committed_files_are_what_the_default_generator_writes():
    docs, questions = _gen().generate()
    assert docs == _jsonl(DATA / "docs.jsonl")
    assert questions == _jsonl(DATA / "questions.jsonl")


def test_rag_multihop_alt_variant_is_deterministic_and_shares_no_name_or_wording():
    gen = _gen()
    base_docs, base_qs = gen.generate()
    docs, qs = gen.generate(seed=2027, variant="alt")
    assert (docs, qs) == gen.generate(seed=2027, variant="alt")
    assert {q["hops"] for q in qs} == {2, 3, 4} and len(qs) == 180
    # Every answer is in the last supporting document's chain end, as in the base set.
    by_id = {d["doc_id"]: d for d in docs}
    for q in qs:
        assert q["answer"] in by_id[q["supporting_docs"][-1]]["text"]
    # No invented name of the dev set comes back.
    base_names = {n for q in base_qs for n in q["chain"]} | {d["title"] for d in base_docs}
    alt_names = {n for q in qs for n in q["chain"]} | {d["title"] for d in docs}
    assert not base_names & alt_names
    # No question wording and no sentence template of the dev set comes back.
    assert not {_shape(q["question"], q["chain"]) for q in base_qs} & {
        _shape(q["question"], q["chain"]) for q in qs
    }

    # A template: a sentence with every capitalized word, number and profession or
    # industry word blanked (names, places, years and the per-variant word lists).
    vary = {w for v in gen.VOCAB.values() for key in ("professions", "industry") for w in v[key]}

    def sentences(ds: list[dict]) -> set[str]:
        out = set()
        for d in ds:
            for s in re.split(r"(?<=\.) ", d["text"]):
                s = re.sub(r"\b[A-Z][\w'.&]*|\d+", "{}", s)
                words = ["{}" if w in vary else w for w in s.split()]
                if len(words) > 2:  # not a title cut off at its dot ("Dr.")
                    out.add(" ".join(words))
        return out

    assert sentences(base_docs) & sentences(gen.generate(seed=12)[0])  # the check bites
    shared = sentences(base_docs) & sentences(docs)
    assert not shared, sorted(shared)[:5]
