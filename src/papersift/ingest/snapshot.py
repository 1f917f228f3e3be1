"""arXiv metadata snapshots: JSON lines with ``id``, ``authors_parsed``, ``versions`` ...

The snapshot names the first version's submission date only inside ``versions``; that date
is the paper's publication date here, and ``update_date`` its last update.
"""

from __future__ import annotations

from collections.abc import Iterator

from papersift.ingest.errors import IngestError
from papersift.ingest.generic import iter_json_lines
from papersift.ingest.records import PaperRecord, parse_date, split_authors


def looks_like_snapshot(obj: dict) -> bool:
    return "authors_parsed" in obj or ("versions" in obj and "update_date" in obj)


def _authors(obj: dict) -> list[str]:
    """'First Last Suffix' from ``authors_parsed`` ([last, first, suffix]), else ``authors``."""
    parsed = obj.get("authors_parsed")
    if isinstance(parsed, list) and parsed:
        names = []
        for part in parsed:
            if not isinstance(part, list | tuple) or not part:
                continue
            if len(part) == 3 and not part[2] and type(part[0]) is str and type(part[1]) is str:
                name = f"{part[1].strip()} {part[0].strip()}".strip()  # the usual [last, first, ""]
            else:  # reorder to first, last, suffix; drop empty pieces
                pieces = (part[1:2], part[0:1], part[2:3])
                name = " ".join(str(x).strip() for piece in pieces for x in piece if x)
            if name:
                names.append(name)
        if names:
            return names
    return split_authors(obj.get("authors"))


def snapshot_record(obj: dict, location: str) -> PaperRecord:
    try:
        arxiv_id = obj.get("id")
        if not arxiv_id:
            raise IngestError("snapshot record has no id")
        versions = obj.get("versions") or []
        published = None
        if isinstance(versions, list) and versions and isinstance(versions[0], dict):
            published = parse_date(versions[0].get("created"), field_name="version date")
        return PaperRecord(
            title=str(obj.get("title") or ""),
            abstract=str(obj.get("abstract") or ""),
            authors=_authors(obj),
            published=published,
            updated=parse_date(obj.get("update_date"), field_name="update_date"),
            categories=str(obj.get("categories") or "").split(),
            doi=obj.get("doi"),
            arxiv_id=str(arxiv_id),
            location=location,
            comment=str(obj.get("comments") or "") or None,
            extra_text=str(obj.get("comments") or ""),
        ).finalize()
    except IngestError as exc:
        raise exc.at(location=location) from None
    except (TypeError, ValueError, AttributeError) as exc:  # a field of an unexpected type
        raise IngestError(f"unusable record ({exc})", location=location) from None


def parse_snapshot(lines: Iterator[str], source: str) -> Iterator[PaperRecord]:
    for number, obj in iter_json_lines(lines):
        yield snapshot_record(obj, f"line {number}")
