"""Core value types shared by every layer.

Plain dataclasses, no database or web types, so ingest parsers, search and the
web layer can pass papers around without importing SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any, get_type_hints

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


# C0 and C1 control characters (NUL, ESC, CSI, DEL ...) but tab and newline: PostgreSQL
# refuses NUL, mail parts must not carry them and a terminal obeys ESC sequences.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def strip_controls(text: str) -> str:
    """``text`` without control characters other than tab and newline (the same on every
    database: applied to every text field at ingest)."""
    return _CONTROLS.sub("", text) if _CONTROLS.search(text) else text


def strip_record_controls(record: Any) -> None:
    """Apply :func:`strip_controls` to every text and list-of-text field of a dataclass."""
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, str):
            setattr(record, f.name, strip_controls(value))
        elif isinstance(value, list) and any(isinstance(v, str) for v in value):
            setattr(record, f.name, [strip_controls(v) if isinstance(v, str) else v for v in value])


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


@dataclass(kw_only=True)
class PaperMetadata:
    """What a source can say about a paper: the descriptive fields, without identity.

    Parsed records (``ingest.records.PaperRecord``) and stored papers (:class:`Paper`)
    both extend it, so each field is declared once.
    """

    title: str
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    published: date | None = None
    updated: date | None = None
    # The day arXiv listed the paper (its "day" on the daily pages), when a source says so.
    announced: date | None = None
    categories: list[str] = field(default_factory=list)
    primary_category: str | None = None
    doi: str | None = None
    arxiv_id: str | None = None
    abs_url: str | None = None
    pdf_url: str | None = None
    code_urls: list[str] = field(default_factory=list)
    comment: str | None = None  # the arXiv comments field (pages, venue, code link)

    @property
    def code_url(self) -> str | None:
        """The primary code link (first found), or None."""
        return self.code_urls[0] if self.code_urls else None

    @property
    def text(self) -> str:
        """The text that search indexes and embeds: title then abstract."""
        return paper_text(self.title, self.abstract)


@dataclass(kw_only=True)
class Paper(PaperMetadata):
    """A research paper as papersift knows it, merged from every source that mentioned it."""

    id: str
    sources: list[str] = field(default_factory=list)
    first_seen: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of :data:`PAPER_FIELDS` plus ``code_url`` (dates as ISO text)."""
        out: dict[str, Any] = {}
        for name in PAPER_FIELDS:
            if name == "code_urls":
                out["code_url"] = self.code_url
            value = getattr(self, name)
            if isinstance(value, date):  # datetime is a date too
                value = value.isoformat()
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out


# The paper's fields, id first, then in declaration order: the one list every other form
# of a paper (database rows, search documents, API schemas, exports) is derived from.
PAPER_FIELDS: tuple[str, ...] = ("id", *(f.name for f in fields(Paper) if f.name != "id"))
# The descriptive fields a source provides (no id, sources or first-seen time).
METADATA_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PaperMetadata))
# Fields holding lists (copied, and never None, when a paper is built from a row).
LIST_FIELDS: frozenset[str] = frozenset(f.name for f in fields(Paper) if f.default_factory is list)


def paper_day(paper: PaperMetadata | Paper) -> date | None:
    """The day a paper belongs to on the daily pages: the day arXiv listed it, else its
    submission date, else the UTC date papersift first saw it (None when it has none)."""
    if paper.announced is not None:
        return paper.announced
    if paper.published is not None:
        return paper.published
    seen = getattr(paper, "first_seen", None)
    if seen is None:
        return None
    if seen.tzinfo is not None:
        seen = seen.astimezone(UTC)
    return seen.date()


def paper_field_types() -> dict[str, Any]:
    """Field name -> resolved type annotation, for deriving schemas (e.g. pydantic models)."""
    hints = get_type_hints(Paper)
    return {name: hints[name] for name in PAPER_FIELDS}


def paper_from_mapping(row: Mapping[Any, Any]) -> Paper:
    """A :class:`Paper` from any mapping that has its fields (a database row, a dict);
    extra keys are ignored, missing or NULL lists become empty, a NULL abstract ''."""
    values: dict[str, Any] = {name: row.get(name) for name in PAPER_FIELDS}
    for name in LIST_FIELDS:
        values[name] = list(values[name] or [])
    values["abstract"] = values["abstract"] or ""
    return Paper(**values)


_HASHLIKE = re.compile(r"^(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}$", re.I)


def readable_name(name: str) -> str:
    """A collection's file-style name as words, without hashes and numbering
    ('000_e3b0215ea9dd5350' -> '', 'reading-list_3f9a01c2d4' -> 'Reading list')."""
    name = re.sub(r"^\d{1,4}_", "", name)  # a page number prefix: '000_...'
    parts = [p for p in re.split(r"[\s_\-.]+", name) if p and not _HASHLIKE.match(p)]
    if not any(ch.isalpha() for p in parts for ch in p):
        return ""
    text = " ".join(parts)
    return text[:1].upper() + text[1:]


def collection_display_title(name: str, title: str) -> str:
    """What people read for a collection: its title, else its name as words, else a
    neutral label with its number (never a hash)."""
    if title.strip():
        return title.strip()
    if words := readable_name(name):
        return words
    number = re.match(r"^\d+", name)
    return f"Collection {int(number.group(0)) + 1}" if number else "Untitled collection"


@dataclass
class CollectionEntry:
    """One position in an ordered collection."""

    rank: int
    paper_id: str


@dataclass
class Collection:
    """An ordered list of papers, e.g. one saved listing page, in page order.

    ``name`` is the stable key (URLs, ``--collection``); ``title`` is what people read
    (set by ``--collection-title`` or ``collections rename``, else derived, never a hash).
    """

    name: str
    origin: str = ""
    title: str = ""
    description: str = ""
    entries: list[CollectionEntry] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.entries)
