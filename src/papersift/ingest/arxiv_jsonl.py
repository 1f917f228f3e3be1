"""Collected arXiv listings as JSON lines: ``id``, ``title``, ``abstract``, ``authors`` (a
list), ``categories`` (a list, primary first), ``primary_category``, ``published``,
``announced``, ``published_month``, ``comment``, ``sources``.

This is the shape of papersift's real corpus (and its packaged demo slice): daily arXiv
listings merged with metadata dumps. ``announced`` is the day the paper appeared in the
listing, the paper's day on the daily pages. A record without a submission date gets the
first of its ``published_month`` (which arXiv ids encode), so it still sorts by age.
"""

from __future__ import annotations

from collections.abc import Iterator

from papersift.ingest.errors import IngestError
from papersift.ingest.generic import iter_json_lines
from papersift.ingest.records import PaperRecord, parse_date, split_authors

# Keys only this shape has (the generic reader knows none of them).
_MARKERS = ("announced", "primary_category", "published_month")


def looks_like_arxiv_jsonl(obj: dict) -> bool:
    """True for a record of collected arXiv listings (not the Kaggle-style snapshot)."""
    return (
        "id" in obj
        and "title" in obj
        and "abstract" in obj
        and "authors_parsed" not in obj
        and any(key in obj for key in _MARKERS)
    )


def _text(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise IngestError(f"{key} is not text")
    return value


def _categories(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(c, str) for c in value):
        return [c.strip() for c in value]
    raise IngestError("categories are neither text nor a list of text")


def arxiv_jsonl_record(obj: dict, location: str) -> PaperRecord:
    """One record; IngestError (with the line) for a record that cannot be a paper."""
    try:
        raw_id = obj.get("id")
        if not isinstance(raw_id, str) or not raw_id.strip():
            raise IngestError("record has no arXiv id")
        authors = obj.get("authors")
        if authors is not None and not isinstance(authors, list | str):
            raise IngestError("authors are neither a list nor text")
        published = parse_date(obj.get("published"), field_name="published date")
        if published is None:
            published = parse_date(_text(obj, "published_month"), field_name="published_month")
        return PaperRecord(
            title=_text(obj, "title") or "",
            abstract=_text(obj, "abstract") or "",
            authors=split_authors(authors),
            published=published,
            announced=parse_date(obj.get("announced"), field_name="announced date"),
            categories=_categories(obj.get("categories")),
            primary_category=_text(obj, "primary_category"),
            doi=_text(obj, "doi"),
            arxiv_id=raw_id,
            comment=_text(obj, "comment"),
            extra_text=_text(obj, "comment") or "",
            location=location,
        ).finalize()
    except IngestError as exc:
        raise exc.at(location=location) from None
    except (TypeError, ValueError, AttributeError) as exc:  # a field of an unexpected type
        raise IngestError(f"unusable record ({exc})", location=location) from None


def parse_arxiv_jsonl(lines: Iterator[str], source: str) -> Iterator[PaperRecord]:
    for number, obj in iter_json_lines(lines):
        record = arxiv_jsonl_record(obj, f"line {number}")
        if record.arxiv_id is None:
            raise IngestError(f"not an arXiv id: {obj.get('id')!r}", location=f"line {number}")
        yield record
