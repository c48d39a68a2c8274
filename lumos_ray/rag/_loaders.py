"""Read text, Markdown, HTML and PDF files into :class:`Document` objects.

A bad file must never sink a whole ingestion: each file that cannot be read
(unsupported type, corrupt PDF, bytes that are not UTF-8, no text at all) is reported
by name with the reason and skipped, and the rest go on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from lumos_ray.rag._config import Document

__all__ = ["SUPPORTED_SUFFIXES", "load_file", "load_paths"]

_TEXT = {".txt", ".text", ".rst", ".log"}
_MD = {".md", ".markdown", ".mdx"}
_HTML = {".html", ".htm", ".xhtml"}
_PDF = {".pdf"}
SUPPORTED_SUFFIXES = frozenset(_TEXT | _MD | _HTML | _PDF)


class _Skip(Exception):
    """A file that cannot be ingested; the message is the reason shown to the user."""


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise _Skip("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Skip(f"not valid UTF-8 text (byte {exc.start})") from None


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_MD_EMPH = re.compile(r"(\*\*|__|\*|_|`)(?=\S)(.+?)(?<=\S)\1")


def _markdown(text: str) -> tuple[str, str]:
    """Keep the words, drop the markup (links keep their text, headings their title)."""
    m = _MD_HEADING.search(text)
    title = m.group(1).strip() if m else ""
    text = re.sub(r"^```.*$", "", text, flags=re.M)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_HEADING.sub(r"\1", text)
    text = _MD_EMPH.sub(r"\2", text)
    text = re.sub(r"^\s*[-*+>]\s+", "", text, flags=re.M)
    return text, title


def _html(raw: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    h1 = soup.find("h1")
    if not title and h1 is not None:
        title = h1.get_text(" ", strip=True)
    body = soup.body or soup
    text = body.get_text("\n", strip=True)
    return text, title


def _pdf(path: Path) -> tuple[str, str]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.get("/Title") if reader.metadata else None
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise _Skip(f"corrupt or unreadable PDF: {exc}") from None
    except Exception as exc:  # pypdf raises many internal types on broken files
        raise _Skip(f"corrupt or unreadable PDF: {type(exc).__name__}: {exc}") from None
    return "\n\n".join(p.strip() for p in pages if p.strip()), str(meta_title or "")


def load_file(path: Path, doc_id: str | None = None) -> Document:
    """One file → one Document; raises ``_Skip`` with the reason when it can't."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise _Skip(
            f"unsupported file type {suffix or '(none)'!r}; supported: "
            + ", ".join(sorted(SUPPORTED_SUFFIXES))
        )
    if suffix in _PDF:
        text, title = _pdf(path)
    elif suffix in _HTML:
        text, title = _html(_read_utf8(path))
    elif suffix in _MD:
        text, title = _markdown(_read_utf8(path))
    else:
        text, title = _read_utf8(path), ""
    if not text.strip():
        raise _Skip("no extractable text")
    return Document(
        doc_id=doc_id or path.name,
        text=text,
        title=title or path.stem.replace("_", " "),
        source=str(path),
    )


def _walk(paths: Iterable[str | Path]) -> Iterable[tuple[Path, str]]:
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.parts[-1:]):
                    yield f, f.relative_to(p).as_posix()
        else:
            yield p, p.name


def load_paths(paths: Iterable[str | Path]) -> tuple[list[Document], list[dict[str, str]]]:
    """Files and directories (recursively) → (documents, skipped[{path, reason}]).

    A document's id is its path relative to the directory given (or its file name), so
    ingesting the same folder again updates documents instead of duplicating them.
    """
    docs: list[Document] = []
    skipped: list[dict[str, str]] = []
    for path, doc_id in _walk(paths):
        if not path.exists():
            skipped.append({"path": str(path), "reason": "no such file or directory"})
            continue
        try:
            docs.append(load_file(path, doc_id))
        except _Skip as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
        except OSError as exc:
            skipped.append({"path": str(path), "reason": f"cannot read: {exc.strerror or exc}"})
    return docs, skipped
