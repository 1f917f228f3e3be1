"""Pasted identifiers: an arXiv id, a DOI or a paper's URL names one paper, not a topic.

Recognised (the whole query, surrounding spaces, brackets and a final dot ignored):

- arXiv ids, new (``2305.12345``, ``2305.12345v2``) and old style (``hep-th/9901001``), with or
  without ``arXiv:``, and arxiv.org ``abs``/``pdf``/``html`` URLs with or without the scheme;
- DOIs (``10.1234/x``, ``doi:10.1234/x``, doi.org URLs); arXiv's own DataCite DOIs
  (``10.48550/arXiv.2301.00001``) name the arXiv paper;
- any other http(s) URL, matched against the papers' stored abstract and PDF links.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from sqlalchemy.orm import Session

from papersift.store import papers as paper_store

_ARXIV_NEW = r"\d{4}\.\d{4,5}"
_ARXIV_OLD = r"[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7}"
_ARXIV_ID = re.compile(rf"^(?:arxiv:\s*)?({_ARXIV_NEW}|{_ARXIV_OLD})(?:v\d+)?$", re.I)
_ARXIV_URL = re.compile(
    rf"^(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html|format)/"
    rf"({_ARXIV_NEW}|{_ARXIV_OLD})(?:v\d+)?(?:\.pdf)?/?(?:[?#].*)?$",
    re.I,
)
_DOI = re.compile(
    r"^(?:doi:\s*|(?:https?://)?(?:dx\.)?doi\.org/)?(10\.\d{4,9}/\S+)$",
    re.I,
)
_ARXIV_DOI = re.compile(rf"^10\.48550/arxiv\.({_ARXIV_NEW}|{_ARXIV_OLD})(?:v\d+)?$", re.I)
_URL = re.compile(r"^https?://\S+$", re.I)
_TRIM = " \t<>()[]{}\"'.,;"
LABELS = {"arxiv": "arXiv id", "doi": "DOI", "url": "link"}


@dataclass(frozen=True)
class Reference:
    """What a pasted query names: ``kind`` is ``arxiv``, ``doi`` or ``url``."""

    kind: str
    value: str


def identify(text: str | None) -> Reference | None:
    """The identifier the whole query is, or None when it is an ordinary query."""
    if not text:
        return None
    raw = re.sub(r"^(arxiv|doi):\s+", r"\1:", text.strip().strip(_TRIM), flags=re.I)
    if not raw or len(raw) > 500 or any(ch.isspace() for ch in raw):
        return None
    match = _ARXIV_ID.match(raw) or _ARXIV_URL.match(raw)
    if match:
        return Reference("arxiv", match.group(1))
    match = _DOI.match(raw)
    if match:
        doi = unquote(match.group(1)).rstrip(_TRIM).lower()
        arxiv = _ARXIV_DOI.match(doi)
        if arxiv:
            return Reference("arxiv", arxiv.group(1))
        return Reference("doi", doi)
    if _URL.match(raw):
        return Reference("url", raw)
    return None


def url_variants(url: str) -> list[str]:
    """Spellings of the same link a paper may have stored (scheme, www, trailing slash)."""
    bare = re.sub(r"^https?://(?:www\.)?", "", url.strip(), flags=re.I).rstrip("/")
    bare = bare.split("#", 1)[0]
    out = []
    for scheme in ("https://", "http://", "https://www.", "http://www."):
        for tail in ("", "/"):
            out.append(f"{scheme}{bare}{tail}")
    return out


def resolve(session: Session, ref: Reference) -> str | None:
    """The id of the paper ``ref`` names in the database, or None."""
    if ref.kind == "url":
        return paper_store.id_by_url(session, url_variants(ref.value))
    return paper_store.resolve_id(session, ref.value)
