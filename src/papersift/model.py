"""Core value types shared by every layer.

Plain dataclasses, no database or web types, so ingest parsers, search and the
web layer can pass papers around without importing SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime

# arXiv identifiers: new style 2301.00001(v2), old style hep-th/9901001(v1).
_ARXIV_NEW = re.compile(r"^(\d{4}\.\d{4,5})(v\d+)?$")
_ARXIV_OLD = re.compile(r"^([a-z\-]+(?:\.[A-Z]{2})?/\d{7})(v\d+)?$")
_ARXIV_PREFIX = re.compile(
    r"^(?:https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/|arxiv:|oai:arxiv\.org:)", re.I
)


def normalize_arxiv_id(raw: str | None) -> str | None:
    """Return the version-less arXiv id in ``raw`` (URL, ``arXiv:`` or OAI form), or None."""
    if not raw:
        return None
    text = _ARXIV_PREFIX.sub("", raw.strip())
    text = text.removesuffix(".pdf")
    for pattern in (_ARXIV_NEW, _ARXIV_OLD):
        match = pattern.match(text)
        if match:
            return match.group(1)
    return None


def normalize_doi(raw: str | None) -> str | None:
    """Lower-cased DOI without resolver prefix; DOIs are case-insensitive by definition."""
    if not raw:
        return None
    text = raw.strip()
    text = re.sub(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", "", text, flags=re.I).strip()
    # A snapshot field may carry several DOIs separated by spaces; the first one names the paper.
    text = text.split()[0] if text.split() else ""
    return text.lower() if text.startswith("10.") else None


def normalize_title(title: str) -> str:
    """Title key used to merge the same paper seen with different casing or punctuation."""
    text = unicodedata.normalize("NFKC", title).lower()
    text = re.sub(r"\$[^$]*\$", lambda m: m.group(0).strip("$"), text)
    text = re.sub(r"[^\w]+", " ", text)
    return " ".join(text.split())


def title_paper_id(title: str) -> str:
    """Short stable id for a paper with no arXiv id: 'p' + 12 hex digits of the title key."""
    digest = hashlib.blake2b(normalize_title(title).encode("utf-8"), digest_size=6).hexdigest()
    return f"p{digest}"


def clean_text(text: str | None) -> str:
    """Collapse runs of whitespace (feeds wrap abstracts at 80 columns)."""
    if not text:
        return ""
    return " ".join(text.split())


def paper_text(title: str | None, abstract: str | None) -> str:
    """The text search indexes and embeds: the title, then the abstract (one definition, so the
    content hash of stored embeddings, the lexical index and evaluation always agree)."""
    title = title or ""
    return f"{title}. {abstract}" if abstract else title


@dataclass
class Paper:
    """A research paper as papersift knows it, merged from every source that mentioned it."""

    id: str
    title: str
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    published: date | None = None
    updated: date | None = None
    categories: list[str] = field(default_factory=list)
    doi: str | None = None
    arxiv_id: str | None = None
    abs_url: str | None = None
    pdf_url: str | None = None
    code_urls: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    first_seen: datetime | None = None

    @property
    def code_url(self) -> str | None:
        """The primary code link (first found), or None."""
        return self.code_urls[0] if self.code_urls else None

    @property
    def text(self) -> str:
        """The text that search indexes and embeds: title then abstract."""
        return paper_text(self.title, self.abstract)

    def to_dict(self) -> dict:
        """JSON-ready mapping (dates as ISO strings)."""
        return {
            "id": self.id,
            "title": self.title,
            "abstract": self.abstract,
            "authors": list(self.authors),
            "published": self.published.isoformat() if self.published else None,
            "updated": self.updated.isoformat() if self.updated else None,
            "categories": list(self.categories),
            "doi": self.doi,
            "arxiv_id": self.arxiv_id,
            "abs_url": self.abs_url,
            "pdf_url": self.pdf_url,
            "code_url": self.code_url,
            "code_urls": list(self.code_urls),
            "sources": list(self.sources),
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
        }


@dataclass
class CollectionEntry:
    """One position in an ordered collection."""

    rank: int
    paper_id: str


@dataclass
class Collection:
    """An ordered list of papers, e.g. one saved listing page, in page order."""

    name: str
    origin: str = ""
    entries: list[CollectionEntry] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.entries)
