"""Reading reference-manager exports: BibTeX, RIS and CSL-JSON, the three formats Zotero,
Mendeley, Paperpile, JabRef and Google Scholar write.

Parsing is left to maintained parsers (bibtexparser v2 with its LaTeX decoding, rispy);
CSL-JSON is JSON, each item checked by a pydantic model. This module only maps their
fields to :class:`ImportEntry` and finds the identifiers reference managers hide in odd
places (Google Scholar's ``journal = {arXiv preprint arXiv:1706.03762}``, Zotero's
``number: "arXiv:1706.03762"``, an arxiv.org URL, arXiv's DataCite DOI).

A file that cannot be read at all raises :class:`LibraryFormatError` with a message for the
reader; an entry that cannot be used is returned with its ``error`` set, so the import
reports it and goes on with the others.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import bibtexparser
import rispy
from bibtexparser import middlewares
from bibtexparser.model import Entry, ParsingFailedBlock
from pydantic import BaseModel, ConfigDict, ValidationError
from pylatexenc.latex2text import LatexNodes2Text  # type: ignore[import-untyped]

from papersift.model import normalize_arxiv_id, normalize_doi, strip_controls
from papersift.search.identifiers import identify

Format = Literal["bibtex", "ris", "csl-json"]
FORMATS: tuple[Format, ...] = ("bibtex", "ris", "csl-json")
MAX_IMPORT_BYTES = 5 * 1024 * 1024  # a 10,000-paper Zotero library exports to about 4 MB
MAX_IMPORT_ENTRIES = 5_000
MAX_FIELD_CHARS = 100_000  # one field longer than this is not a reference, it is an attack

_ARXIV_IN_TEXT = re.compile(
    r"arxiv[:\s/.]*(?:abs/|pdf/)?(\d{4}\.\d{4,5}|[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?",
    re.I,
)
_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d|2100)\b")
_RIS_START = re.compile(r"^TY  -", re.M)


class LibraryFormatError(ValueError):
    """The file cannot be read as a library export; the message says why (for the reader)."""


@dataclass
class ImportEntry:
    """One reference of an imported file, as far as papersift needs it."""

    n: int  # 1-based position in the file
    key: str = ""  # the citation key or item id, to help the reader find it
    title: str = ""
    abstract: str = ""
    authors: list[str] = field(default_factory=list)
    arxiv_id: str | None = None
    doi: str | None = None
    published: date | None = None
    url: str | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        """How the report names the entry."""
        return self.title or self.key or f"entry {self.n}"


@dataclass
class ParsedLibrary:
    format: Format
    entries: list[ImportEntry]


# -- decoding and detection ----------------------------------------------------------------


def decode(data: bytes) -> str:
    """The text of an uploaded file: UTF-8 (with or without a BOM) or UTF-16 with a BOM."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise LibraryFormatError(
            "the file is not UTF-8 text; export it again as UTF-8 (Zotero, Mendeley and "
            "JabRef all offer it)"
        ) from None
    if "\x00" in text:
        raise LibraryFormatError("the file is binary, not a BibTeX, RIS or CSL-JSON export")
    return text


def detect(text: str, filename: str = "") -> Format:
    """The format of an export, from its name's extension, else from its content."""
    name = filename.lower()
    if name.endswith((".bib", ".bibtex")):
        return "bibtex"
    if name.endswith(".ris"):
        return "ris"
    if name.endswith(".json"):
        return "csl-json"
    head = text.lstrip()[:1]
    if head in ("[", "{"):
        return "csl-json"
    if _RIS_START.search(text):
        return "ris"
    if re.search(r"@\s*[A-Za-z]+\s*[{(]", text):
        return "bibtex"
    raise LibraryFormatError("this is not a BibTeX (.bib), RIS (.ris) or CSL-JSON (.json) export")


def parse(data: bytes, filename: str = "", format: str | None = None) -> ParsedLibrary:
    """Read an uploaded export (any of :data:`FORMATS`, detected when ``format`` is None)."""
    if len(data) > MAX_IMPORT_BYTES:
        raise LibraryFormatError(
            f"the file is {len(data):,} bytes; the limit is {MAX_IMPORT_BYTES:,} "
            "(export one collection at a time)"
        )
    text = decode(data)
    if not text.strip():
        raise LibraryFormatError("the file is empty")
    if format is not None and format not in FORMATS:
        raise LibraryFormatError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    fmt: Format = format if format is not None else detect(text, filename)
    reader = {"bibtex": parse_bibtex, "ris": parse_ris, "csl-json": parse_csl_json}[fmt]
    entries = reader(text)
    if not entries:
        raise LibraryFormatError(f"no references found in this {_NAMES[fmt]} file")
    if len(entries) > MAX_IMPORT_ENTRIES:
        raise LibraryFormatError(
            f"the file has {len(entries):,} references; the limit is {MAX_IMPORT_ENTRIES:,}"
        )
    return ParsedLibrary(fmt, [_finish(e) for e in entries])


_NAMES = {"bibtex": "BibTeX", "ris": "RIS", "csl-json": "CSL-JSON"}


# -- common clean-up -----------------------------------------------------------------------


def _clean(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return " ".join(strip_controls(text).split())


def _arxiv_from(*candidates: str | None) -> str | None:
    """The arXiv id any of these texts names (an id, URL, DOI or 'arXiv:...' mention)."""
    for text in candidates:
        if not text:
            continue
        ref = identify(text)
        if ref is not None and ref.kind == "arxiv":
            return normalize_arxiv_id(ref.value)
        match = _ARXIV_IN_TEXT.search(text)
        if match:
            return normalize_arxiv_id(match.group(1))
    return None


def _doi_from(*candidates: str | None) -> str | None:
    for text in candidates:
        if not text:
            continue
        ref = identify(text)
        if ref is not None and ref.kind == "doi":
            return normalize_doi(ref.value)
        doi = normalize_doi(text)
        if doi and " " not in doi:
            return doi
    return None


def _year_date(text: str | None) -> date | None:
    match = _YEAR.search(text or "")
    return date(int(match.group(1)), 1, 1) if match else None


def _finish(entry: ImportEntry) -> ImportEntry:
    """Cleaned text fields, checked lengths; an entry without a title is an error."""
    if entry.error:
        return entry
    entry.title = _clean(entry.title)
    entry.abstract = _clean(entry.abstract)
    entry.authors = [a for a in (_clean(a)[:300] for a in entry.authors) if a][:500]
    entry.key = _clean(entry.key)[:200]
    too_long = [len(entry.title), len(entry.abstract)]
    if max(too_long) > MAX_FIELD_CHARS:
        entry.error = f"a field is longer than {MAX_FIELD_CHARS:,} characters"
    elif not entry.title:
        entry.error = "no title"
    return entry


# -- BibTeX --------------------------------------------------------------------------------


def _person(name: str) -> str:
    """'Last, First' (BibTeX's form) as 'First Last', as the corpus writes names."""
    parts = [p.strip() for p in name.split(",")]
    if len(parts) == 2 and parts[1]:
        return f"{parts[1]} {parts[0]}"
    if len(parts) == 3 and parts[2]:  # Last, Jr, First
        return f"{parts[2]} {parts[0]} {parts[1]}"
    return name


_DECODER: LatexNodes2Text | None = None
MAX_LATEX_CHARS = 5_000  # longer fields are not LaTeX-decoded (pylatexenc is slow on them)


def _latex(value: str) -> str:
    """LaTeX text as plain text ('M{\\"u}ller' -> 'Müller', math kept as written).

    pylatexenc costs milliseconds per field, so it runs only on the fields papersift keeps
    and only when they hold a command; otherwise braces are simply dropped (measured: a
    5 MB file decoded by bibtexparser's middleware, every field, took minutes).
    """
    global _DECODER
    if "\\" not in value or len(value) > MAX_LATEX_CHARS:
        return value.replace("{", "").replace("}", "").replace("~", " ")
    if _DECODER is None:
        _DECODER = LatexNodes2Text(math_mode="verbatim", keep_braced_groups=False)
    try:
        return str(_DECODER.latex_to_text(value))
    except Exception:  # pylatexenc is tolerant; never let one field fail the file
        return value.replace("{", "").replace("}", "")


def parse_bibtex(text: str) -> list[ImportEntry]:
    """Entries of a .bib file; a block the parser cannot read is a failed entry."""
    try:
        library = bibtexparser.parse_string(
            text, append_middleware=[middlewares.SeparateCoAuthors()]
        )
    except (RecursionError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise LibraryFormatError(
            f"the BibTeX file cannot be read ({exc.__class__.__name__})"
        ) from None
    blocks = [b for b in library.blocks if isinstance(b, Entry | ParsingFailedBlock)]
    out: list[ImportEntry] = []
    for n, block in enumerate(blocks, 1):
        if isinstance(block, ParsingFailedBlock):
            line = getattr(block, "start_line", None)
            where = f" (line {line + 1})" if isinstance(line, int) else ""
            out.append(ImportEntry(n, error=f"not valid BibTeX{where}"))
            continue
        out.append(_bibtex_entry(n, block))
    return out


def _bibtex_entry(n: int, entry: Any) -> ImportEntry:
    fields = {str(f.key).lower(): f.value for f in entry.fields}

    def text(name: str, latex: bool = False) -> str:
        value = fields.get(name)
        if isinstance(value, list):
            value = " ".join(str(v) for v in value)
        return _clean(_latex(str(value)) if latex and value is not None else value)

    authors = fields.get("author") or []
    if isinstance(authors, str):
        authors = [authors]
    authors = [_latex(str(a)) for a in authors]
    prefix = text("archiveprefix") or text("eprinttype")
    eprint = text("eprint")
    arxiv = _arxiv_from(
        eprint if (prefix.lower() == "arxiv" or not prefix) else None,
        text("arxivid"),
        text("doi"),
        text("url"),
        text("journal"),
        text("note"),
        text("howpublished"),
        text("archiveprefix"),
    )
    published = _year_date(text("year") or text("date"))
    return ImportEntry(
        n,
        key=str(entry.key or ""),
        title=text("title", latex=True),
        abstract=text("abstract", latex=True),
        authors=[_person(_clean(a)) for a in authors],
        arxiv_id=arxiv,
        doi=_doi_from(text("doi")),
        published=published,
        url=text("url") or None,
    )


# -- RIS -----------------------------------------------------------------------------------


def _first(ref: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = ref.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value:
            return _clean(value)
    return ""


def parse_ris(text: str) -> list[ImportEntry]:
    """References of a .ris file (``TY`` ... ``ER``); a file cut off inside a reference
    is refused as a whole (the last reference would be lost without a word)."""
    starts = len(_RIS_START.findall(text))
    try:
        refs = rispy.loads(text, skip_unknown_tags=True)
    except (RecursionError, ValueError, IndexError, KeyError, TypeError, OSError) as exc:
        raise LibraryFormatError(f"the RIS file cannot be read ({exc})") from None
    if starts and len(refs) < starts:
        raise LibraryFormatError(
            f"the RIS file has {starts} references but only {len(refs)} end with 'ER  -': "
            "is it cut off?"
        )
    out: list[ImportEntry] = []
    for n, ref in enumerate(refs, 1):
        urls = [u for u in (ref.get("urls") or []) if isinstance(u, str)]
        authors = [a for a in (ref.get("authors") or ref.get("first_authors") or []) if a]
        doi = _first(ref, "doi")
        arxiv = _arxiv_from(
            doi,
            *urls,
            _first(ref, "journal_name"),
            _first(ref, "secondary_title"),
            _first(ref, "number"),
            _first(ref, "note"),
            _first(ref, "notes"),
        )
        out.append(
            ImportEntry(
                n,
                key=_first(ref, "id"),
                title=_first(ref, "title", "primary_title", "translated_title"),
                abstract=_first(ref, "abstract", "notes_abstract"),
                authors=[_person(_clean(a)) for a in authors if isinstance(a, str)],
                arxiv_id=arxiv,
                doi=_doi_from(doi),
                published=_year_date(_first(ref, "year", "publication_year", "date")),
                url=urls[0] if urls else None,
            )
        )
    return out


# -- CSL-JSON ------------------------------------------------------------------------------


class _CslName(BaseModel):
    model_config = ConfigDict(extra="allow")

    family: str | None = None
    given: str | None = None
    literal: str | None = None


class _CslDate(BaseModel):
    model_config = ConfigDict(extra="allow")

    date_parts: list[list[int | str]] | None = None
    raw: str | None = None
    literal: str | None = None


class _CslItem(BaseModel):
    """The CSL-JSON fields papersift reads (the schema's spelling; others are ignored)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str | int | None = None
    type: str | None = None
    title: str | None = None
    abstract: str | None = None
    author: list[_CslName] | None = None
    DOI: str | None = None
    URL: str | None = None
    number: str | int | None = None
    container_title: str | None = None
    note: str | None = None
    issued: _CslDate | None = None


def _csl_name(name: _CslName) -> str:
    if name.literal:
        return name.literal
    return " ".join(p for p in (name.given, name.family) if p)


def _csl_date(issued: _CslDate | None) -> date | None:
    if issued is None:
        return None
    if issued.date_parts and issued.date_parts[0]:
        try:
            year = int(issued.date_parts[0][0])
        except (TypeError, ValueError):
            return None
        return date(year, 1, 1) if 1000 <= year <= 2100 else None
    return _year_date(issued.raw or issued.literal)


def _hyphen_keys(item: dict[str, Any]) -> dict[str, Any]:
    """CSL spells keys with hyphens ('container-title', 'date-parts')."""
    out = {k.replace("-", "_"): v for k, v in item.items() if isinstance(k, str)}
    issued = out.get("issued")
    if isinstance(issued, dict):
        out["issued"] = {k.replace("-", "_"): v for k, v in issued.items()}
    return out


def parse_csl_json(text: str) -> list[ImportEntry]:
    """Items of a CSL-JSON file: a JSON array of items (one item alone is accepted too)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise LibraryFormatError("the JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise LibraryFormatError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise LibraryFormatError("a CSL-JSON file is a list of items ([{...}, ...])")
    out: list[ImportEntry] = []
    for n, raw in enumerate(data, 1):
        if not isinstance(raw, dict):
            out.append(ImportEntry(n, error="not a CSL-JSON item (an object)"))
            continue
        try:
            item = _CslItem.model_validate(_hyphen_keys(raw))
        except (ValidationError, RecursionError) as exc:
            where = ""
            if isinstance(exc, ValidationError) and exc.errors():
                where = " in " + ".".join(str(p) for p in exc.errors()[0]["loc"])
            out.append(
                ImportEntry(n, key=_clean(raw.get("id"))[:200], error=f"invalid item{where}")
            )
            continue
        number = str(item.number) if item.number is not None else None
        out.append(
            ImportEntry(
                n,
                key=str(item.id) if item.id is not None else "",
                title=item.title or "",
                abstract=item.abstract or "",
                authors=[_csl_name(a) for a in item.author or []],
                arxiv_id=_arxiv_from(item.DOI, item.URL, number, item.container_title, item.note),
                doi=_doi_from(item.DOI),
                published=_csl_date(item.issued),
                url=item.URL,
            )
        )
    return out
