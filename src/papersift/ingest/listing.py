"""Saved listing pages of a paper site: a few header lines, then title and abstract lines.

The header is the email call to action; its last word ``Subscribe`` is glued to the first
title because the page was saved as text. Each page becomes an ordered collection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from papersift.ingest.errors import IngestError
from papersift.ingest.records import MAX_TITLE_CHARS, PaperRecord

_HEADER_HINT = re.compile(r"(trending papers|email inbox|subscribe)", re.IGNORECASE)
# A title line is a one-line heading; an abstract line is prose. Lines far longer than any
# title mean the page's pairs are out of step (e.g. a title lost its abstract).
_MIN_ABSTRACT_CHARS = 20


def _strip_header(lines: list[str]) -> tuple[int, list[str]]:
    """Index of the first content line and the content lines with 'Subscribe' removed."""
    for i, line in enumerate(lines[:10]):
        if line.startswith("Subscribe") and len(line) > len("Subscribe"):
            header = lines[:i]
            if all(_HEADER_HINT.search(h) or not h.strip() for h in header):
                return i, [line[len("Subscribe") :]] + lines[i + 1 :]
        if line.strip() == "Subscribe":
            return i + 1, lines[i + 1 :]
    start = 0
    while start < len(lines) and start < 5 and _HEADER_HINT.search(lines[start]):
        start += 1
    return start, lines[start:]


def parse_listing(text: str, source: str) -> Iterator[PaperRecord]:
    """Records in page order; raises IngestError naming the line when pairs don't line up."""
    lines = text.split("\n")
    offset, body = _strip_header([line.rstrip("\r") for line in lines])
    while body and not body[-1].strip():
        body.pop()
    if not body:
        raise IngestError("listing page has a header but no papers", source=source)
    i = 0
    while i < len(body):
        title_no = offset + i + 1
        title = body[i].strip()
        if not title:
            raise IngestError("blank line where a title was expected", location=f"line {title_no}")
        if i + 1 >= len(body) or not body[i + 1].strip():
            raise IngestError(
                f"title {title[:60]!r} has no abstract line after it", location=f"line {title_no}"
            )
        abstract = body[i + 1].strip()
        if len(title) > MAX_TITLE_CHARS:
            raise IngestError(
                f"title line is {len(title):,} characters (limit {MAX_TITLE_CHARS:,}); "
                "titles and abstracts may be out of step",
                location=f"line {title_no}",
            )
        if len(abstract) < _MIN_ABSTRACT_CHARS and len(abstract) < len(title):
            raise IngestError(
                f"line {title_no + 1} ({abstract[:60]!r}) is too short for an abstract; "
                "titles and abstracts may be out of step",
                location=f"line {title_no + 1}",
            )
        record = PaperRecord(title=title, abstract=abstract, location=f"line {title_no}")
        try:
            yield record.finalize()
        except IngestError as exc:
            raise exc.at(location=f"line {title_no}") from None
        i += 2
