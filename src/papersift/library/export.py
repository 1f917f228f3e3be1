"""A tag's papers as BibTeX, RIS or CSL-JSON, for Zotero, Mendeley, JabRef and the rest.

BibTeX is :mod:`papersift.export`'s (escaped against LaTeX and BibTeX injection, keys unique
per file). RIS is written by rispy, from values with control characters dropped and
whitespace (newlines included) collapsed, so no value can start a line, that is a tag of
its own. CSL-JSON is written by ``json``; it follows the schema's spelling and Zotero's
habits (an arXiv preprint is ``type: article`` with ``number: arXiv:<id>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

import rispy

from papersift.export import BibtexExport, bibtex_entry_type, clean_text, to_bibtex_all
from papersift.model import Paper

ExportFormat = Literal["bibtex", "ris", "csl-json"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("bibtex", "ris", "csl-json")
MEDIA_TYPES = {
    "bibtex": ("application/x-bibtex", "bib"),
    "ris": ("application/x-research-info-systems", "ris"),
    "csl-json": ("application/vnd.citationstyles.csl+json", "json"),
}


def _url(paper: Paper) -> str | None:
    url = clean_text(paper.abs_url or "")
    if url.lower().startswith(("http://", "https://")):
        return url
    if paper.arxiv_id:
        return f"https://arxiv.org/abs/{clean_text(paper.arxiv_id)}"
    return f"https://doi.org/{clean_text(paper.doi)}" if paper.doi else None


def _ris_reference(paper: Paper, key: str) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "type_of_reference": "JOUR" if bibtex_entry_type(paper) == "article" else "GEN",
        "id": key,
        "title": clean_text(paper.title),
    }
    authors = [a for a in (clean_text(n) for n in paper.authors) if a]
    if authors:
        ref["authors"] = authors
    if paper.published:
        ref["year"] = str(paper.published.year)
        ref["date"] = paper.published.strftime("%Y/%m/%d/")
    if paper.abstract and (abstract := clean_text(paper.abstract)):
        ref["abstract"] = abstract
    if paper.doi:
        ref["doi"] = clean_text(paper.doi)
    if paper.arxiv_id:
        ref["notes"] = [f"arXiv:{clean_text(paper.arxiv_id)}"]
        ref["publisher"] = "arXiv"
    if url := _url(paper):
        ref["urls"] = [url]
    return ref


def to_ris(papers: Iterable[Paper]) -> str:
    """One .ris text for ``papers``, in their order."""
    keys = BibtexExport()
    refs = [_ris_reference(p, keys.key(p)) for p in papers]
    return rispy.dumps(refs) if refs else ""


def _csl_name(name: str) -> dict[str, str]:
    """A name as CSL's family/given (the corpus writes 'Given Family'); one word: family."""
    words = clean_text(name).split()
    if len(words) == 1:
        return {"family": words[0]}
    return {"family": words[-1], "given": " ".join(words[:-1])}


def _csl_item(paper: Paper, key: str) -> dict[str, Any]:
    article = bibtex_entry_type(paper) == "article"
    item: dict[str, Any] = {
        "id": key,
        "type": "article-journal" if article else "article",
        "title": clean_text(paper.title),
    }
    authors = [_csl_name(a) for a in paper.authors if clean_text(a)]
    if authors:
        item["author"] = authors
    if paper.abstract:
        item["abstract"] = clean_text(paper.abstract)
    if paper.published:
        p = paper.published
        item["issued"] = {"date-parts": [[p.year, p.month, p.day]]}
    if paper.doi:
        item["DOI"] = clean_text(paper.doi)
    if paper.arxiv_id:
        item["number"] = f"arXiv:{clean_text(paper.arxiv_id)}"
        item["publisher"] = "arXiv"
    if url := _url(paper):
        item["URL"] = url
    return item


def to_csl_json(papers: Iterable[Paper]) -> str:
    """A CSL-JSON array for ``papers``, in their order."""
    keys = BibtexExport()
    items = [_csl_item(p, keys.key(p)) for p in papers]
    return json.dumps(items, ensure_ascii=False, indent=2) + "\n"


def render(papers: Iterable[Paper], format: str) -> str:
    """``papers`` in one of :data:`EXPORT_FORMATS` (ValueError for another)."""
    if format == "bibtex":
        return to_bibtex_all(papers)
    if format == "ris":
        return to_ris(papers)
    if format == "csl-json":
        return to_csl_json(papers)
    raise ValueError(f"unknown format {format!r}; use one of {', '.join(EXPORT_FORMATS)}")
