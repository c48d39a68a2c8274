"""Generate the synthetic multi-hop QA set (invented entities, 2- to 4-hop questions).

Deterministic: the same ``--seed`` always writes byte-identical files. Every name is
made up from syllables, so no embedding model has seen a fact about any of them and
nothing can be answered from the question alone: the answer is reachable only by
following the chain of documents the question describes.

World (one short document per entity, 2-5 sentences, facts phrased with several
templates so no single wording is learnable):

* structures (bridges, towers, dams, ...) — located in a city, built by a company,
  designed by a person (a distractor link);
* companies — based in a city, founded by a person, built other structures;
* people — born in a village that only their own document names, studied at a
  university, trained under a mentor (another person), wrote a book; referred to by
  surname, with a title ("Dr.") or in the possessive after the first sentence, as
  real text does;
* universities, cities and books with their own documents.

Questions follow relation chains; ``hops`` is the number of documents on the chain,
``supporting_docs`` are those documents in order, and the answer string occurs in the
last one (and, for person answers, in the person's own document):

* 2 hops: founder of the company that built S; birthplace of the author of B; ...
* 3 hops: birthplace of the founder of the company that built S; university of the
  mentor of the author of B; ...
* 4 hops: birthplace of the mentor of the founder of the company that built S; ...

Answers are chosen to be rare strings (villages are named in one document; people in a
few), so "the answer string is in the top-k chunks" rarely happens by accident; the
generator drops questions whose answer occurs in more than ``MAX_ANSWER_DOCS`` docs.

  .venv/bin/python benchmarks/rag_multihop_data.py --out benchmarks/data/multihop

``--variant alt`` writes a held-out set for checking that the defaults (tuned on the
committed "base" set) carry over: other syllables (no invented name in common), other
kinds of structures and firms, other sentence templates for every relation ("was a
pupil of", "a native of", "the contractor was", ...) and other question wording
("teacher", "set up", "birthplace", "constructed"); the same relation chains and the
same checks on answers. Pair it with another seed and folder, e.g.

  .venv/bin/python benchmarks/rag_multihop_data.py --variant alt --seed 2027 --out /tmp/multihop-alt
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

MAX_ANSWER_DOCS = 3

_ONSETS = "b br c d dr f g gr h k l m n p pr r s st t tr v w z th sh".split()
_VOWELS = "a e i o u ae ei ou ia".split()
_CODAS = "n r l s th m nd rk st x ll".split()


@dataclass
class Ent:
    kind: str
    name: str
    facts: dict[str, str] = field(default_factory=dict)  # relation -> other entity name

    @property
    def doc_id(self) -> str:
        return self.name.lower().replace(" ", "_").replace(".", "")


class World:
    def __init__(self, seed: int, vocab: dict | None = None) -> None:
        self.rng = random.Random(seed)
        self.used: set[str] = set()
        self.vocab = vocab or VOCAB["base"]

    def word(self, syllables: int) -> str:
        onsets, vowels, codas = self.vocab["onsets"], self.vocab["vowels"], self.vocab["codas"]
        while True:
            w = "".join(
                self.rng.choice(onsets)
                + self.rng.choice(vowels)
                + (self.rng.choice(codas) if self.rng.random() < 0.5 else "")
                for _ in range(syllables)
            ).capitalize()
            if w not in self.used and 4 <= len(w) <= 11:
                self.used.add(w)
                return w


_STRUCT_KINDS = ["Bridge", "Tower", "Dam", "Viaduct", "Lighthouse", "Observatory", "Aqueduct"]
_INDUSTRY = ["engineering", "construction", "steelworks", "shipbuilding", "masonry", "foundry"]
_COMPANY_SUFFIX = ["Works", "Company", "Brothers", "Holdings", "Ironworks", "Guild"]
_PROFESSIONS = ["engineer", "architect", "surveyor", "chemist", "mathematician", "geologist"]
_BOOK_NOUNS = ["Tides", "Stone", "Lanterns", "Winter", "Rivers", "Arches", "Salt", "Ash"]
_TITLES = ["Dr.", "Professor", "Sir"]

# Word lists per variant. "base" is the committed dev set (the defaults were tuned on
# it); "alt" is a held-out variant: other syllables (so other invented names), other
# kinds of structures, firms and books, other village endings and titles.
VOCAB: dict[str, dict] = {
    "base": {
        "onsets": _ONSETS,
        "vowels": _VOWELS,
        "codas": _CODAS,
        "struct_kinds": _STRUCT_KINDS,
        "industry": _INDUSTRY,
        "company_suffix": _COMPANY_SUFFIX,
        "professions": _PROFESSIONS,
        "book_nouns": _BOOK_NOUNS,
        "titles": _TITLES,
        "village_suffix": ["by", "holm", "wick", "stead", "ford"],
        "street": "Street",
        "river": "River",
        "region": "Province",
    },
    "alt": {
        "onsets": "j q y k kl gl pl bl sk sp sn fl gw ch wr zh ph".split(),
        "vowels": "o a y oo ea ai au ey".split(),
        "codas": "p g ck nt mp ng rn sk ft".split(),
        "struct_kinds": ["Canal", "Tunnel", "Pier", "Fort", "Mill", "Cathedral", "Station"],
        "industry": ["railway", "textile", "glassworks", "brewing", "printing", "pottery"],
        "company_suffix": ["Carriers", "Partners", "Yards", "Manufacturing", "Trust", "Mills"],
        "professions": ["painter", "physician", "botanist", "lawyer", "astronomer", "sculptor"],
        "book_nouns": ["Songs", "Gardens", "Hours", "Mirrors", "Harvest", "Orchards", "Smoke"],
        "titles": ["Mrs.", "Captain", "Judge"],
        "village_suffix": ["ton", "dale", "bury", "mere", "field"],
        "street": "Lane",
        "river": "Water",
        "region": "County",
    },
}


def build_world(seed: int, variant: str = "base") -> tuple[dict[str, list[Ent]], World]:
    v = VOCAB[variant]
    w = World(seed, v)
    rng = w.rng
    cities = [Ent("city", w.word(2)) for _ in range(24)]
    unis = [Ent("university", f"University of {w.word(2)}") for _ in range(14)]
    people = [Ent("person", f"{w.word(2)} {w.word(2)}") for _ in range(90)]
    companies = [
        Ent("company", f"{w.word(2)} {rng.choice(v['company_suffix'])}") for _ in range(45)
    ]
    structs = [Ent("structure", f"{w.word(3)} {rng.choice(v['struct_kinds'])}") for _ in range(70)]
    books = [Ent("book", f"The {rng.choice(v['book_nouns'])} of {w.word(2)}") for _ in range(50)]
    for u in unis:
        u.facts["located_in"] = rng.choice(cities).name
        u.facts["founded_by"] = rng.choice(people).name
    for i, p in enumerate(people):
        p.facts["born_in"] = f"{w.word(2)}{rng.choice(v['village_suffix'])}"
        p.facts["studied_at"] = rng.choice(unis).name
        p.facts["profession"] = rng.choice(v["professions"])
        # Mentors form chains (a person's mentor is someone listed before them, so
        # there are no cycles and 4-hop chains exist).
        if i >= 8:
            p.facts["mentor"] = people[rng.randrange(0, i)].name
    for c in companies:
        c.facts["based_in"] = rng.choice(cities).name
        c.facts["founded_by"] = rng.choice(people[8:]).name
        c.facts["industry"] = rng.choice(v["industry"])
        c.facts["year"] = str(rng.randrange(1820, 1930))
        c.facts["workshop"] = f"{w.word(2)} {v['street']}"
    for s in structs:
        s.facts["located_in"] = rng.choice(cities).name
        s.facts["built_by"] = rng.choice(companies).name
        s.facts["designed_by"] = rng.choice(people).name
        s.facts["year"] = str(rng.randrange(1840, 1960))
    for c in companies:  # reverse link: the first company a person founded
        founder = next(p for p in people if p.name == c.facts["founded_by"])
        founder.facts.setdefault("founded", c.name)
    for b in books:
        b.facts["written_by"] = rng.choice(people[8:]).name
        b.facts["published_by"] = rng.choice(companies).name
        b.facts["year"] = str(rng.randrange(1850, 1970))
    for c in cities:
        c.facts["river"] = f"{w.word(2)} {v['river']}"
        c.facts["region"] = f"{w.word(2)} {v['region']}"
    return {
        "city": cities,
        "university": unis,
        "person": people,
        "company": companies,
        "structure": structs,
        "book": books,
    }, w


def _surname(name: str) -> str:
    return name.split()[-1]


def write_docs(world: dict[str, list[Ent]], rng: random.Random) -> dict[str, str]:
    """Entity name -> document text. Reverse links (a company lists what it built,
    a person what they founded) are added so the graph has the distractor edges a real
    corpus has."""
    by_name = {e.name: e for es in world.values() for e in es}
    built: dict[str, list[str]] = {}
    founded: dict[str, list[str]] = {}
    wrote: dict[str, list[str]] = {}
    for s in world["structure"]:
        built.setdefault(s.facts["built_by"], []).append(s.name)
    for c in world["company"]:
        founded.setdefault(c.facts["founded_by"], []).append(c.name)
    for b in world["book"]:
        wrote.setdefault(b.facts["written_by"], []).append(b.name)
    docs: dict[str, str] = {}
    for s in world["structure"]:
        kind = s.name.split()[-1].lower()
        f = s.facts
        sents = [
            rng.choice(
                [
                    f"The {s.name} is a {kind} in {f['located_in']}.",
                    f"The {s.name} is a {kind} that stands in the city of {f['located_in']}.",
                ]
            ),
            rng.choice(
                [
                    f"It was built by {f['built_by']} in {f['year']}.",
                    f"{f['built_by']} built it in {f['year']}.",
                    f"Construction was carried out by {f['built_by']}, who built it in "
                    f"{f['year']}.",
                ]
            ),
            rng.choice(
                [
                    f"Its design is credited to {f['designed_by']}.",
                    f"The plans were drawn up by {f['designed_by']}.",
                ]
            ),
        ]
        docs[s.name] = " ".join(sents)
    for c in world["company"]:
        f = c.facts
        founder = f["founded_by"]
        sents = [
            f"{c.name} is a {f['industry']} company based in {f['based_in']}.",
            rng.choice(
                [
                    f"It was founded in {f['year']} by {founder}.",
                    f"{founder} founded the company in {f['year']}.",
                    f"The firm was established by {by_name[founder].name} in {f['year']}, "
                    f"and {_surname(founder)} remained its director for decades.",
                ]
            ),
        ]
        sents.append(
            rng.choice(
                [
                    f"Its first workshop stood on {f['workshop']}.",
                    f"The firm's first workshop was on {f['workshop']}.",
                ]
            )
        )
        works = built.get(c.name, [])[:3]
        if works:
            sents.append(f"Its best-known works include the {' and the '.join(works)}.")
        docs[c.name] = " ".join(sents)
    for p in world["person"]:
        f = p.facts
        sur = _surname(p.name)
        title = rng.choice(_TITLES)
        sents = [
            rng.choice(
                [
                    f"{p.name} was a {f['profession']} born in the village of {f['born_in']}.",
                    f"{p.name} was born in {f['born_in']} and worked as a {f['profession']}.",
                ]
            ),
            rng.choice(
                [
                    f"{title} {sur} studied at the {f['studied_at']}.",
                    f"{sur} was educated at the {f['studied_at']}.",
                ]
            ),
        ]
        if "mentor" in f:
            sents.append(
                rng.choice(
                    [
                        f"{sur}'s mentor was {f['mentor']}.",
                        f"{sur} trained under {f['mentor']}.",
                        f"As a young {f['profession']}, {sur} was taught by {f['mentor']}.",
                    ]
                )
            )
        if founded.get(p.name):
            sents.append(f"{sur} founded {founded[p.name][0]}.")
        if wrote.get(p.name):
            sents.append(f"{title} {sur} is the author of {wrote[p.name][0]}.")
        docs[p.name] = " ".join(sents)
    for u in world["university"]:
        f = u.facts
        docs[u.name] = (
            f"The {u.name} is a university in {f['located_in']}. "
            f"It was founded by {f['founded_by']}."
        )
    for b in world["book"]:
        f = b.facts
        docs[b.name] = " ".join(
            [
                rng.choice(
                    [
                        f"{b.name} is a book written by {f['written_by']}.",
                        f"{b.name} is a {f['year']} novel by {f['written_by']}.",
                    ]
                ),
                f"It was published by {f['published_by']} in {f['year']}.",
            ]
        )
    for c in world["city"]:
        f = c.facts
        docs[c.name] = (
            f"{c.name} is a city in {f['region']}. It lies on the {f['river']}. "
            "Its old town is known for its markets."
        )
    return docs


def write_docs_alt(world: dict[str, list[Ent]], rng: random.Random) -> dict[str, str]:
    """The "alt" variant's documents: the same facts in other sentence templates, so
    the retriever meets relation phrasings it was not tuned on ("apprenticed with",
    "a native of", "the contractor for", ...); about half of each relation's templates
    share no word with the questions' relation words."""
    titles = VOCAB["alt"]["titles"]
    built: dict[str, list[str]] = {}
    founded: dict[str, list[str]] = {}
    wrote: dict[str, list[str]] = {}
    for s in world["structure"]:
        built.setdefault(s.facts["built_by"], []).append(s.name)
    for c in world["company"]:
        founded.setdefault(c.facts["founded_by"], []).append(c.name)
    for b in world["book"]:
        wrote.setdefault(b.facts["written_by"], []).append(b.name)
    docs: dict[str, str] = {}
    for s in world["structure"]:
        kind = s.name.split()[-1].lower()
        f = s.facts
        docs[s.name] = " ".join(
            [
                rng.choice(
                    [
                        f"The {s.name} is a {kind} located in {f['located_in']}.",
                        f"Visitors to {f['located_in']} can see the {s.name}, a {kind}.",
                    ]
                ),
                rng.choice(
                    [
                        f"{f['built_by']} completed it in {f['year']}.",
                        f"The contractor was {f['built_by']}, and work finished in {f['year']}.",
                        f"It was constructed by {f['built_by']} in {f['year']}.",
                    ]
                ),
                rng.choice(
                    [
                        f"{f['designed_by']} was its architect.",
                        f"It follows a design by {f['designed_by']}.",
                    ]
                ),
            ]
        )
    for c in world["company"]:
        f = c.facts
        founder = f["founded_by"]
        sents = [
            rng.choice(
                [
                    f"{c.name} is a {f['industry']} firm headquartered in {f['based_in']}.",
                    f"Headquartered in {f['based_in']}, {c.name} works in {f['industry']}.",
                ]
            ),
            rng.choice(
                [
                    f"{founder} set up the business in {f['year']}.",
                    f"Its founder, {founder}, started it in {f['year']}.",
                    f"The business was started by {founder} in {f['year']}; "
                    f"{_surname(founder)} ran it until retirement.",
                ]
            ),
            rng.choice(
                [
                    f"Its original workshop was located on {f['workshop']}.",
                    f"The earliest premises were on {f['workshop']}.",
                ]
            ),
        ]
        works = built.get(c.name, [])[:3]
        if works:
            sents.append(f"Projects by the firm include the {' and the '.join(works)}.")
        docs[c.name] = " ".join(sents)
    for p in world["person"]:
        f = p.facts
        sur = _surname(p.name)
        title = rng.choice(titles)
        sents = [
            rng.choice(
                [
                    f"{p.name}, a {f['profession']}, was a native of {f['born_in']}.",
                    f"Born in {f['born_in']}, {p.name} became a {f['profession']}.",
                    f"{p.name} grew up in the hamlet of {f['born_in']} and later worked as a "
                    f"{f['profession']}.",
                ]
            ),
            rng.choice(
                [
                    f"{title} {sur} graduated from the {f['studied_at']}.",
                    f"{sur} took a degree at the {f['studied_at']}.",
                    f"{sur} attended the {f['studied_at']}.",
                ]
            ),
        ]
        if "mentor" in f:
            sents.append(
                rng.choice(
                    [
                        f"{sur} was a pupil of {f['mentor']}.",
                        f"{sur} apprenticed with {f['mentor']}.",
                        f"{f['mentor']} was {sur}'s teacher.",
                        f"{sur} learned the craft from {f['mentor']}.",
                    ]
                )
            )
        if founded.get(p.name):
            sents.append(
                rng.choice(
                    [
                        f"{sur} started {founded[p.name][0]}.",
                        f"{title} {sur} was the founder of {founded[p.name][0]}.",
                    ]
                )
            )
        if wrote.get(p.name):
            sents.append(
                rng.choice(
                    [
                        f"{title} {sur} wrote {wrote[p.name][0]}.",
                        f"{wrote[p.name][0]} is the best-known book by {sur}.",
                    ]
                )
            )
        docs[p.name] = " ".join(sents)
    for u in world["university"]:
        f = u.facts
        docs[u.name] = (
            f"The {u.name} is located in {f['located_in']}. {f['founded_by']} established it."
        )
    for b in world["book"]:
        f = b.facts
        docs[b.name] = " ".join(
            [
                rng.choice(
                    [
                        f"{b.name} was written by {f['written_by']}.",
                        f"{f['written_by']} is the writer of {b.name}, which appeared in "
                        f"{f['year']}.",
                    ]
                ),
                rng.choice(
                    [
                        f"{f['published_by']} published it in {f['year']}.",
                        f"Its publisher was {f['published_by']}.",
                    ]
                ),
            ]
        )
    for c in world["city"]:
        f = c.facts
        docs[c.name] = (
            f"{c.name} lies in {f['region']}, on the banks of the {f['river']}. "
            "It is known for its harbour."
        )
    return docs


# -- question chains --------------------------------------------------------------
# (start kind, relations followed, question template): a chain starts at an entity of
# the given kind and follows the relations; the last relation's value is the answer.
Chain = tuple[str, list[str], str]

_CHAINS: list[Chain] = [
    # 2 hops
    ("structure", ["built_by", "founded_by"], "Who founded the company that built the {}?"),
    ("book", ["written_by", "born_in"], "In which village was the author of {} born?"),
    ("company", ["founded_by", "born_in"], "Where was the founder of {} born?"),
    ("book", ["written_by", "studied_at"], "Which university did the author of {} attend?"),
    ("structure", ["built_by", "workshop"],
     "On which street was the first workshop of the company that built the {}?"),
    # 3 hops
    ("book", ["written_by", "founded", "workshop"],
     "On which street did the company founded by the author of {} have its first workshop?"),
    ("structure", ["built_by", "founded_by", "born_in"],
     "In which village was the founder of the company that built the {} born?"),
    ("book", ["written_by", "mentor", "born_in"], "Where was the mentor of the author of {} born?"),
    ("company", ["founded_by", "mentor", "studied_at"],
     "At which university did the mentor of the founder of {} study?"),
    ("book", ["published_by", "founded_by", "born_in"],
     "Where was the founder of the publisher of {} born?"),
    # 4 hops
    ("book", ["written_by", "mentor", "founded", "workshop"],
     "On which street did the company founded by the mentor of the author of {} have its "
     "first workshop?"),
    ("structure", ["built_by", "founded_by", "mentor", "born_in"],
     "Where was the mentor of the founder of the company that built the {} born?"),
    ("book", ["written_by", "mentor", "mentor", "born_in"],
     "In which village was the mentor of the mentor of the author of {} born?"),
    ("book", ["published_by", "founded_by", "mentor", "studied_at"],
     "Which university did the mentor of the founder of the publisher of {} attend?"),
]  # fmt: skip

# The "alt" variant asks for the same relation chains in other words ("teacher" for
# mentor, "set up" / "started" for founded, "constructed" for built, "home village" /
# "birthplace" for born in), none of them the wording the defaults were tuned on.
_CHAINS_ALT: list[Chain] = [
    # 2 hops
    ("structure", ["built_by", "founded_by"], "Who set up the firm that constructed the {}?"),
    ("book", ["written_by", "born_in"], "What is the home village of the writer of {}?"),
    ("company", ["founded_by", "born_in"], "What is the birthplace of the person who started {}?"),
    ("book", ["written_by", "studied_at"], "Where did the writer of {} go to university?"),
    ("structure", ["built_by", "workshop"],
     "What street had the original workshop of the firm that constructed the {}?"),
    # 3 hops
    ("book", ["written_by", "founded", "workshop"],
     "What street was the original workshop of the firm started by the writer of {} on?"),
    ("structure", ["built_by", "founded_by", "born_in"],
     "What is the birthplace of the person who set up the firm that constructed the {}?"),
    ("book", ["written_by", "mentor", "born_in"],
     "What is the home village of the teacher of the writer of {}?"),
    ("company", ["founded_by", "mentor", "studied_at"],
     "Where did the teacher of the person who started {} go to university?"),
    ("book", ["published_by", "founded_by", "born_in"],
     "What is the birthplace of the person who set up the publisher of {}?"),
    # 4 hops
    ("book", ["written_by", "mentor", "founded", "workshop"],
     "What street was the original workshop of the firm started by the teacher of the "
     "writer of {} on?"),
    ("structure", ["built_by", "founded_by", "mentor", "born_in"],
     "What is the home village of the teacher of the person who set up the firm that "
     "constructed the {}?"),
    ("book", ["written_by", "mentor", "mentor", "born_in"],
     "What is the birthplace of the teacher of the teacher of the writer of {}?"),
    ("book", ["published_by", "founded_by", "mentor", "studied_at"],
     "Where did the teacher of the person who set up the publisher of {} go to university?"),
]  # fmt: skip


def make_questions(
    world: dict[str, list[Ent]],
    docs: dict[str, str],
    per_hops: int,
    rng: random.Random,
    chains_all: list[Chain] | None = None,
) -> list[dict]:
    by_name = {e.name: e for es in world.values() for e in es}
    out: list[dict] = []
    for hops in (2, 3, 4):
        chains = [c for c in (chains_all or _CHAINS) if len(c[1]) == hops]
        cands: list[dict] = []
        for kind, rels, phrase in chains:
            for start in world[kind]:
                names = [start.name]
                ok = True
                for rel in rels:
                    ent = by_name[names[-1]]
                    if rel not in ent.facts:
                        ok = False
                        break
                    names.append(ent.facts[rel])
                if not ok or len(set(names)) != len(names):
                    continue
                answer = names[-1]
                n_docs = sum(answer in t for t in docs.values())
                if n_docs > MAX_ANSWER_DOCS:
                    continue
                support = [by_name[n].doc_id for n in names[:-1]]
                cands.append(
                    {
                        "question": phrase.format(names[0]),
                        "answer": answer,
                        "hops": hops,
                        "supporting_docs": support,
                        "chain": names,
                        "relations": rels,
                    }
                )
        rng.shuffle(cands)
        # Round-robin over templates so every chain shape is represented.
        by_tpl: dict[tuple[str, ...], list[dict]] = {}
        for c in cands:
            by_tpl.setdefault(tuple(c["relations"]), []).append(c)
        picked: list[dict] = []
        while len(picked) < per_hops and any(by_tpl.values()):
            for lst in by_tpl.values():
                if lst and len(picked) < per_hops:
                    picked.append(lst.pop())
        out.extend(picked)
    for i, q in enumerate(out):
        q["id"] = f"mh{i:04d}"
    return out


def generate(
    seed: int = 11, variant: str = "base", per_hops: int = 60
) -> tuple[list[dict], list[dict]]:
    """The set as rows: (docs, questions), in the order the files list them."""
    world, w = build_world(seed, variant)
    alt = variant == "alt"
    texts = (write_docs_alt if alt else write_docs)(world, w.rng)
    by_name = {e.name: e for es in world.values() for e in es}
    questions = make_questions(world, texts, per_hops, w.rng, _CHAINS_ALT if alt else _CHAINS)
    docs = [
        {"doc_id": by_name[name].doc_id, "title": name, "text": texts[name]}
        for name in sorted(texts)
    ]
    rows = []
    for q in questions:
        row = {k: q[k] for k in ("id", "question", "answer", "hops", "supporting_docs")}
        row["chain"] = q["chain"]
        rows.append(row)
    return docs, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / "multihop"))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--variant",
        choices=sorted(VOCAB),
        default="base",
        help="base: the committed dev set; alt: held-out names, templates and question "
        "wording (use another --seed and --out)",
    )
    ap.add_argument("--per-hops", type=int, default=60, help="questions per hop count (2, 3, 4)")
    args = ap.parse_args()
    docs, questions = generate(args.seed, args.variant, args.per_hops)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for fname, rows in (("docs.jsonl", docs), ("questions.jsonl", questions)):
        with open(out / fname, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {h: sum(q["hops"] == h for q in questions) for h in (2, 3, 4)}
    print(f"{len(docs)} docs, {len(questions)} questions {counts} -> {out}")


if __name__ == "__main__":
    main()
