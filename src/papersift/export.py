"""Paper exports: JSON lines and BibTeX, shared by the CLI and the web app."""

from __future__ import annotations

import json
import re
import unicodedata

from papersift.model import Paper

_BIBTEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_BIBTEX_TABLE = str.maketrans(_BIBTEX_SPECIAL)  # one C pass instead of a Python loop per char


def _bib_escape(text: str, *, keep_math: bool = True) -> str:
    """Escape BibTeX specials, leaving $...$ math untouched so LaTeX renders it."""
    parts = re.split(r"(\$[^$]*\$)", text) if keep_math else [text]
    out = []
    for part in parts:
        if keep_math and len(part) >= 2 and part.startswith("$") and part.endswith("$"):
            out.append(part)
        else:
            out.append(part.translate(_BIBTEX_TABLE).replace("$", r"\$"))
    return "".join(out)


def bibtex_key(paper: Paper) -> str:
    """first-author surname + year + first title word, ASCII only: 'vaswani2017attention'."""
    if not paper.authors:
        return paper.id.replace("/", "_")
    surname = paper.authors[0].split()[-1]
    year = str(paper.published.year) if paper.published else ""
    words = [w for w in re.findall(r"[A-Za-z]+", paper.title) if len(w) > 3]
    first = words[0] if words else "paper"
    raw = f"{surname}{year}{first}".lower()
    return unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode() or paper.id


def to_bibtex(paper: Paper) -> str:
    """One BibTeX entry (``@article`` with a DOI, else ``@misc``), specials escaped."""
    fields: list[tuple[str, str]] = [("title", "{" + _bib_escape(paper.title) + "}")]
    if paper.authors:
        fields.append(("author", _bib_escape(" and ".join(paper.authors), keep_math=False)))
    if paper.published:
        fields.append(("year", str(paper.published.year)))
        fields.append(("month", paper.published.strftime("%b").lower()))
    if paper.arxiv_id:
        fields += [("eprint", paper.arxiv_id), ("archivePrefix", "arXiv")]
        if paper.categories:
            fields.append(("primaryClass", paper.categories[0]))
    if paper.doi:
        fields.append(("doi", paper.doi))
    url = paper.abs_url or (f"https://doi.org/{paper.doi}" if paper.doi else None)
    if url:
        fields.append(("url", url))
    if paper.abstract:
        fields.append(("abstract", _bib_escape(paper.abstract)))
    kind = "article" if paper.doi else "misc"
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@{kind}{{{bibtex_key(paper)},\n{body}\n}}\n"


def to_jsonl(paper: Paper) -> str:
    """One JSON line of :meth:`Paper.to_dict` (non-ASCII kept as is)."""
    return json.dumps(paper.to_dict(), ensure_ascii=False) + "\n"


class BibtexExport:
    def __init__(self):
        self.u = set()

    def key(self, paper):
        return bibtex_key(paper)

    def __call__(self, paper):
        return to_bibtex(paper)


def to_bibtex_all(papers):
    return "\n".join(to_bibtex(p) for p in papers)
