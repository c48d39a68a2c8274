"""A small multi-hop corpus written for the RAG tests (no tests in this module).

Each question's answer needs two documents: the question names the subject of the
first document, which names a second entity, whose own document holds the answer
(the "bridge" pattern of HotpotQA). Distractors share the question's wording so plain
vector search fills its top-k with them. All facts are invented, so the embedding
model cannot know them. Files are written in several formats (txt, md, html, pdf)
so ingestion of every supported type is exercised on the way.
"""

from __future__ import annotations

import zlib
from pathlib import Path

__test__ = False  # data only

#: doc file name -> (title, text)
DOCS: dict[str, tuple[str, str]] = {
    # Q1: bridge -> engineer -> birthplace
    "harbor_bridge.md": (
        "Harbor Bridge of Velmora",
        "The Harbor Bridge of Velmora is a steel arch bridge completed in 1931. It was "
        "designed by Ilse Marquand and spans the estuary of the Velm.",
    ),
    "ilse_marquand.txt": (
        "Ilse Marquand",
        "Ilse Marquand was a structural engineer. She grew up in Kestrel Falls, a mill "
        "town in the northern hills, and later taught at the Polytechnic of Arden.",
    ),
    "old_stone_bridge.html": (
        "Old Stone Bridge of Velmora",
        "The Old Stone Bridge of Velmora is a medieval bridge in the town centre. Its "
        "designer is unknown; local legend says the town of Velmora was born around it.",
    ),
    "velmora_lighthouse.txt": (
        "Velmora Harbor Lighthouse",
        "The designer of the Velmora Harbor Lighthouse, Tomas Reyl, was born in the "
        "harbor town of Saltmere. The lighthouse guards the entrance of Velmora harbor.",
    ),
    # Q2: band -> lead singer -> instrument
    "copper_lanterns.md": (
        "The Copper Lanterns",
        "The Copper Lanterns are a folk band from Dunmore. Their lead singer is Maren "
        "Oakhart, and their second album Quiet Harbors topped the folk charts.",
    ),
    "maren_oakhart.html": (
        "Maren Oakhart",
        "Maren Oakhart is a musician best known for the hammered dulcimer, which she "
        "learned from her grandmother in the fishing villages of the coast.",
    ),
    "silver_lanterns.txt": (
        "The Silver Lanterns",
        "The Silver Lanterns are a rock band. The lead singer of the Silver Lanterns "
        "plays the electric guitar and the band's drummer plays a vintage kit.",
    ),
    # Q3: republic -> capital -> river
    "orlandia.txt": (
        "Republic of Orlandia",
        "The Republic of Orlandia is a small inland state. Its capital is Vessant, seat "
        "of the National Assembly and of the supreme court.",
    ),
    "vessant.pdf": (
        "Vessant",
        "Vessant is an old trading city built on both banks of the Calder. Its cathedral "
        "dates from the twelfth century and its market from the ninth.",
    ),
    "marisca.md": (
        "Republic of Marisca",
        "The capital of the Republic of Marisca is a port; the river Oster flows through "
        "the capital of the Republic of Marisca before it reaches the sea.",
    ),
    # Q4: telescope -> company -> founder
    "aurora_x2.txt": (
        "Aurora X2",
        "The Aurora X2 is an amateur telescope manufactured by Brightfield Optics since "
        "2015. It has a 150 mm mirror.",
    ),
    "brightfield_optics.md": (
        "Brightfield Optics",
        "Brightfield Optics was set up in 1988 by Oskar Lindqvist in a garage in Uppsala; "
        "today it employs four hundred people.",
    ),
    "aurora_x1.html": (
        "Aurora X1",
        "The Aurora X1 telescope was the company's first telescope. The founder of the "
        "Nova Scope company, Greta Holm, called it the best telescope of its year.",
    ),
    # Q5: coach -> club -> stadium
    "pieter_halvorsen.txt": (
        "Pieter Halvorsen",
        "Pieter Halvorsen is a football manager who has coached FC Ravensholm since 2019 "
        "after a playing career as a defender.",
    ),
    "fc_ravensholm.pdf": (
        "FC Ravensholm",
        "FC Ravensholm plays its matches at Lindgarde Park, a ground with twelve thousand "
        "seats on the edge of the old harbour district.",
    ),
    "coaches_stadiums.md": (
        "Football stadiums",
        "Every football club coached by a famous manager wants a new home stadium; the "
        "stadium of Arden United, the Crown Ground, was rebuilt in 2001.",
    ),
    # Q6: novel -> author -> award year
    "glass_orchard.txt": (
        "The Glass Orchard",
        "The Glass Orchard is a 2004 novel by Teodor Vance about a family of apple growers "
        "in a valley that is flooded for a dam.",
    ),
    "teodor_vance.html": (
        "Teodor Vance",
        "Teodor Vance is a novelist and essayist. The Halden Prize was given to Teodor "
        "Vance in 2011; he lives in a farmhouse near the coast.",
    ),
    "orchard_award.txt": (
        "Orchard Book Award",
        "The author of the award-winning book about an orchard, Lena Brisk, won the "
        "Orchard Book Award in 1997 for a novel about glass makers.",
    ),
}

#: (question, answer, [the two supporting doc files])
QUESTIONS: list[tuple[str, str, list[str]]] = [
    (
        "In which town was the designer of the Harbor Bridge of Velmora born?",
        "Kestrel Falls",
        ["harbor_bridge.md", "ilse_marquand.txt"],
    ),
    (
        "What instrument does the lead singer of The Copper Lanterns play?",
        "hammered dulcimer",
        ["copper_lanterns.md", "maren_oakhart.html"],
    ),
    (
        "Which river flows through the capital of the Republic of Orlandia?",
        "Calder",
        ["orlandia.txt", "vessant.pdf"],
    ),
    (
        "Who founded the company that makes the Aurora X2 telescope?",
        "Oskar Lindqvist",
        ["aurora_x2.txt", "brightfield_optics.md"],
    ),
    (
        "What is the home stadium of the football club coached by Pieter Halvorsen?",
        "Lindgarde Park",
        ["pieter_halvorsen.txt", "fc_ravensholm.pdf"],
    ),
    (
        "In what year did the author of The Glass Orchard win an award?",
        "2011",
        ["glass_orchard.txt", "teodor_vance.html"],
    ),
]


def _pdf_bytes(title: str, text: str) -> bytes:
    """A minimal valid one-page PDF with the text (Helvetica), so the PDF loader is
    exercised with a real file and no PDF-writing dependency."""
    words = f"{title}. {text}".split()
    lines, cur = [], ""
    for w in words:
        if len(cur) + len(w) + 1 > 80:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    esc = [ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for ln in lines]
    stream = "BT /F1 11 Tf 50 750 Td 14 TL " + " ".join(f"({ln}) Tj T*" for ln in esc) + " ET"
    objs = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_corpus(directory: Path) -> Path:
    """Write DOCS as files of their formats into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, (title, text) in DOCS.items():
        path = directory / name
        if name.endswith(".md"):
            path.write_text(f"# {title}\n\n{text}\n")
        elif name.endswith(".html"):
            path.write_text(
                f"<html><head><title>{title}</title><style>p {{color: red}}</style></head>"
                f"<body><h1>{title}</h1><p>{text}</p><script>var x = 1;</script></body></html>"
            )
        elif name.endswith(".pdf"):
            path.write_bytes(_pdf_bytes(title, text))
        else:
            path.write_text(f"{title}\n\n{text}\n")
    return directory


def write_bad_files(directory: Path) -> dict[str, str]:
    """Files ingestion must skip, by name → a word its reason contains."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "broken.pdf").write_bytes(b"%PDF-1.4\n" + zlib.compress(b"not a pdf") * 3)
    (directory / "slides.pptx").write_bytes(b"PK\x03\x04 binary office file")
    (directory / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (directory / "empty.md").write_text("   \n")
    return {
        "broken.pdf": "pdf",
        "slides.pptx": "unsupported",
        "latin1.txt": "utf-8",
        "empty.md": "no extractable text",
    }


def answer_recall(hits_per_question: list[list[str]]) -> float:
    """Share of QUESTIONS whose answer appears in the texts of its hits."""
    found = 0
    for (_, answer, _), texts in zip(QUESTIONS, hits_per_question, strict=True):
        found += any(answer.lower() in t.lower() for t in texts)
    return found / len(QUESTIONS)
