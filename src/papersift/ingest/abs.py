"""arXiv ``.abs`` metadata files: one paper per file, as arXiv keeps them.

A dashed line, ``\\\\``, the header (``arXiv:ID``, ``From:``, one ``Date:`` line per version,
``Title:``, ``Authors:``, ``Categories:``, ``Comments:``, ``DOI:`` ...; long values continue
on indented lines), ``\\\\``, the abstract, ``\\\\``. The first ``Date:`` is the submission
of version 1 (the publication date), the last revision date the update.
"""

from __future__ import annotations

import re

from papersift.ingest.errors import IngestError
from papersift.ingest.records import PaperRecord, parse_date, split_authors

_FIELD = re.compile(r"^([A-Za-z][A-Za-z-]*(?: \(revised v\d+\))?):\s?(.*)$")
_AFFILIATION = re.compile(r"\([^()]*\)")  # "Yu Shi (Dept. of Phys., Fudan University)"
_ID = re.compile(r"^(?:arXiv:|Paper:\s*)(\S+)")


def looks_like_abs(head: str) -> bool:
    """True when the text starts like an arXiv .abs file."""
    lines = [line.strip() for line in head.splitlines()[:4]]
    return len(lines) >= 3 and lines[0].startswith("-----") and lines[1] == "\\\\"


def _header(lines: list[str]) -> tuple[str | None, dict[str, list[str]]]:
    arxiv_id: str | None = None
    fields: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines:
        if not line.strip():
            continue
        if m := _ID.match(line):
            arxiv_id = m.group(1)
            last = None
            continue
        if line[:1].isspace() and last is not None:  # continuation of the previous field
            fields[last][-1] += " " + line.strip()
            continue
        if m := _FIELD.match(line):
            last = m.group(1).split(" (", 1)[0].lower()
            fields.setdefault(last, []).append(m.group(2).strip())
    return arxiv_id, fields


def parse_abs(text: str, source: str) -> PaperRecord:
    """The paper in one .abs file; IngestError when the file is not one."""
    parts = re.split(r"^\\\\[ \t]*$", text, flags=re.M)
    if len(parts) < 3:
        raise IngestError("not an arXiv .abs file (no \\\\ separated header and abstract)")
    arxiv_id, fields = _header(parts[1].splitlines())
    if arxiv_id is None:
        raise IngestError("arXiv .abs file without an arXiv: id line")

    def one(key: str) -> str | None:
        values = fields.get(key)
        return values[0] if values else None

    dates = fields.get("date", [])
    categories = (one("categories") or "").split()
    record = PaperRecord(
        title=one("title") or "",
        abstract=parts[2],
        authors=split_authors(_AFFILIATION.sub("", one("authors") or "")),
        published=parse_date(_date_text(dates[0]), field_name="Date") if dates else None,
        updated=parse_date(_date_text(dates[-1]), field_name="Date") if len(dates) > 1 else None,
        categories=categories,
        doi=one("doi"),
        arxiv_id=arxiv_id,
        comment=one("comments"),
        extra_text=one("comments") or "",
        location="header",
    )
    try:
        return record.finalize()
    except IngestError as exc:
        raise exc.at(source=source) from None


def _date_text(value: str) -> str:
    """'Tue, 1 Nov 1994 18:57:48 GMT   (199kb)' without the size note."""
    return value.split("(", 1)[0].strip()
