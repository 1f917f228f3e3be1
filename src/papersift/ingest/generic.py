"""Plain JSON lines and CSV files with at least a title and an abstract per record.

Column names are matched case-insensitively with common synonyms, so exports of other tools
go in without a mapping file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from papersift.ingest.errors import IngestError
from papersift.ingest.records import PaperRecord, parse_date, split_authors
from papersift.model import normalize_arxiv_id

_SYNONYMS = {
    "id": ("id", "paper_id", "arxiv_id", "_id", "identifier"),
    "title": ("title", "name"),
    "abstract": ("abstract", "summary", "text", "description"),
    "authors": ("authors", "author", "creators"),
    "date": ("date", "published", "publication_date", "pub_date", "year", "created"),
    "updated": ("updated", "update_date", "modified"),
    "url": ("url", "link", "abs_url", "html_url"),
    "pdf": ("pdf", "pdf_url"),
    "doi": ("doi",),
    "categories": ("categories", "category", "tags", "subjects"),
    "code": ("code", "code_url", "repo", "repository", "github"),
}


def _pick(lowered: dict, key: str) -> object:
    """The first non-empty value among ``key``'s synonyms (``lowered`` has lower-case keys)."""
    for name in _SYNONYMS[key]:
        value = lowered.get(name)
        if value is not None and value != "":
            return value
    return None


def _lowered(row: dict) -> dict:
    if all(type(k) is str and k.islower() and k == k.strip() for k in row):
        return row  # the common case: already lower-case keys, no copy
    return {str(k).strip().lower(): v for k, v in row.items() if k is not None}


def record_from_mapping(row: dict, location: str) -> PaperRecord:
    """A record from a loosely named mapping (one JSON object or CSV row)."""
    row = _lowered(row)
    try:
        title = _pick(row, "title")
        if not isinstance(title, str) or not title.strip():
            raise IngestError("record has no title", location=location)
        abstract = _pick(row, "abstract")
        if abstract is not None and not isinstance(abstract, str):
            raise IngestError("abstract is not text", location=location)
        raw_id = _pick(row, "id")
        url = _pick(row, "url")
        arxiv_id = normalize_arxiv_id(str(raw_id)) if raw_id is not None else None
        arxiv_id = arxiv_id or (normalize_arxiv_id(str(url)) if url else None)
        cats = _pick(row, "categories")
        if isinstance(cats, str):
            categories = cats.split()
        elif isinstance(cats, list | tuple):
            categories = [str(c) for c in cats]
        elif cats is None:
            categories = []
        else:
            raise TypeError("categories are neither text nor a list")
        code = _pick(row, "code")
        return PaperRecord(
            title=title,
            abstract=abstract or "",
            authors=split_authors(_pick(row, "authors")),
            published=parse_date(_pick(row, "date")),
            updated=parse_date(_pick(row, "updated"), field_name="updated date"),
            categories=categories,
            doi=str(_pick(row, "doi") or "") or None,
            arxiv_id=arxiv_id,
            abs_url=str(url) if url else None,
            pdf_url=str(_pick(row, "pdf") or "") or None,
            code_urls=[str(code)] if code else [],
            location=location,
        ).finalize()
    except IngestError as exc:
        raise exc.at(location=location) from None
    except (TypeError, ValueError, AttributeError) as exc:  # a field of an unexpected type
        raise IngestError(f"unusable record ({exc})", location=location) from None


def iter_json_lines(lines: Iterator[str]) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a broken line raises with its number."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(f"broken JSON ({exc.msg})", location=f"line {number}") from None
        if not isinstance(obj, dict):
            raise IngestError("expected a JSON object", location=f"line {number}")
        yield number, obj


def parse_jsonl(lines: Iterator[str], source: str) -> Iterator[PaperRecord]:
    for number, obj in iter_json_lines(lines):
        yield record_from_mapping(obj, f"line {number}")


def parse_csv(text: str, source: str) -> Iterator[PaperRecord]:
    dialect = "excel-tab" if source.lower().endswith(".tsv") else "excel"
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    fields = {f.strip().lower() for f in reader.fieldnames or []}
    if not fields & set(_SYNONYMS["title"]):
        raise IngestError("CSV header has no title column", location="line 1")
    try:
        for row in reader:
            yield record_from_mapping(row, f"line {reader.line_num}")
    except csv.Error as exc:
        raise IngestError(f"broken CSV ({exc})", location=f"line {reader.line_num}") from None
