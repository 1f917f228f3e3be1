"""Paper exports: JSON lines and BibTeX, shared by the CLI and the web app.

BibTeX is written to be read back exactly, whatever the paper text holds. Text fields
(title, author, abstract, primaryClass) are LaTeX-escaped as literal text: every backslash,
brace and special character becomes a LaTeX text symbol (``\\textbackslash{}``,
``\\textbraceleft{}``, ``\\%``, ...), so no command from paper text survives (``$\\input{..}$``
prints as written, math included) and the only braces in a field are the ones we add, always
balanced. Identifier fields read verbatim by biblatex (eprint, doi, url) are percent-encoded
instead. Control characters are dropped and whitespace runs collapse to one space (BibTeX
collapses them anyway), which is the one way an exported value differs from the stored one.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote

from papersift.model import Paper

_BIBTEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    # BibTeX counts every brace, escaped or not, so "\{" alone unbalances a field.
    "{": r"\textbraceleft{}",
    "}": r"\textbraceright{}",
    "$": r"\$",
    "&": r"\&",
    "%": r"\%",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # Outside T1 fonts these typeset as other glyphs (< as an inverted !).
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # Styles put author names into \bibitem[label]: a bare ] there ends the label early.
    "[": "{[}",
    "]": "{]}",
}
# Control characters (C0, DEL, C1), bidirectional overrides and lone surrogates are dropped;
# the whitespace ones among them (tab, newline, ...) are left to str.split, which collapses
# them with the rest.
_DROPPED = [*range(0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F]
_DROPPED += [*range(0x202A, 0x202F), *range(0x2066, 0x206A), *range(0xD800, 0xE000)]
_DROP_RE = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in _DROPPED if not chr(c).isspace()) + "]"
)
_BIBTEX_TABLE = str.maketrans(_BIBTEX_SPECIAL)  # one C pass instead of a Python loop per char
# RFC 3986 reserved and unreserved characters: everything else in a URL is percent-encoded,
# which leaves no backslash, brace, quote or space for BibTeX or LaTeX to act on.
_URL_SAFE = ":/?#[]@!$&'()*+,;=-._~%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# DOI registrants of preprint servers and repositories: a DOI there is not a journal's.
_PREPRINT_DOI_PREFIXES = (
    "10.48550/",  # arXiv
    "10.1101/",  # bioRxiv, medRxiv
    "10.2139/",  # SSRN
    "10.21203/",  # Research Square
    "10.20944/",  # Preprints.org
    "10.26434/",  # ChemRxiv
    "10.31219/",  # OSF Preprints
    "10.31234/",  # PsyArXiv
    "10.31235/",  # SocArXiv
    "10.36227/",  # TechRxiv
    "10.22541/",  # Authorea
    "10.5281/",  # Zenodo
    "10.6084/",  # figshare
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def clean_text(text: str) -> str:
    """The text as it can stand in BibTeX: control characters dropped, whitespace collapsed."""
    return " ".join(_DROP_RE.sub("", text).split())


def bibtex_text(text: str) -> str:
    """``text`` as literal LaTeX text: no command, no unbalanced brace, no BibTeX syntax."""
    return clean_text(text).translate(_BIBTEX_TABLE)


def _group(escaped: str) -> str:
    """Wrap in one brace group. A group opening with a backslash would be a BibTeX "special
    character" that styles case-change, so such a group starts with an empty ``{}``."""
    return "{" + ("{}" if escaped.startswith("\\") else "") + escaped + "}"


def _verbatim(text: str) -> str:
    """An identifier or URL for a verbatim field: characters outside RFC 3986 percent-encoded
    (a ``%`` that starts no escape too), so the field holds no backslash, brace or space."""
    return _LONE_PERCENT.sub("%25", quote(clean_text(text), safe=_URL_SAFE))


def _web_url(url: str | None) -> str | None:
    """The verbatim form of an http(s) URL; other schemes (javascript:, file:) are dropped."""
    text = clean_text(url or "")
    return _verbatim(text) if re.match(r"https?://", text, re.I) else None


def _author_field(names: Sequence[str]) -> str:
    """Names joined with " and ". A name a parser would split or reorder (it contains a comma,
    the word "and", or is "others") is braced whole; others stay open, so styles can still
    abbreviate given names."""
    out = []
    for name in names:
        cleaned = clean_text(name)
        if not cleaned:
            continue
        words = cleaned.lower().split()
        escaped = cleaned.translate(_BIBTEX_TABLE)
        if "," in cleaned or "and" in words or words == ["others"]:
            escaped = _group(escaped)
        out.append(escaped)
    return " and ".join(out)


_KEY_FOLD = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "ł": "l"}
    | {"Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i"}
)
_NAME_SUFFIXES = {"jr", "jr.", "sr", "sr.", "ii", "iii", "iv"}


def _ascii(text: str) -> str:
    """ASCII-folded text ('Müller' -> 'Muller', 'Ørsted' -> 'Orsted'); other letters go."""
    folded = unicodedata.normalize("NFKD", text.translate(_KEY_FOLD))
    return folded.encode("ascii", "ignore").decode()


def _surname(name: str) -> str:
    """The family name: before the comma in 'Last, First', else the last word (not 'Jr.')."""
    name = clean_text(name)
    if "," in name:
        return name.split(",", 1)[0]
    words = name.split()
    while len(words) > 1 and words[-1].lower() in _NAME_SUFFIXES:
        words.pop()
    return words[-1] if words else ""


def _key_part(text: str) -> str:
    """Only [A-Za-z0-9_:-]: anything else becomes '_', runs of it one, none at the ends."""
    return re.sub(r"[^A-Za-z0-9_:-]+", "_", _ascii(text)).strip("_")


def bibtex_key(paper: Paper) -> str:
    """first-author surname + year + first title word, from [A-Za-z0-9_:-] only:
    'vaswani2017attention'; the paper id (its unsafe characters as '_') without an author."""
    surname = (
        re.sub(r"[^a-z]", "", _ascii(_surname(paper.authors[0])).lower()) if paper.authors else ""
    )
    if not surname:
        return _key_part(paper.id) or "paper"
    year = str(paper.published.year) if paper.published else ""
    words = [w for w in re.findall(r"[A-Za-z]+", _ascii(paper.title)) if len(w) > 3]
    return f"{surname}{year}{words[0].lower() if words else 'paper'}"


def _suffixes() -> Iterator[str]:
    """a, b, ..., z, aa, ab, ...: what disambiguates clashing keys."""
    width = 1
    while True:
        for n in range(26**width):
            digits = []
            for _ in range(width):
                n, d = divmod(n, 26)
                digits.append(chr(ord("a") + d))
            yield "".join(reversed(digits))
        width += 1


class BibtexExport:
    """Renders papers one at a time (a streamed export) with citation keys unique within it:
    a clash gets a, b, ... appended. BibTeX compares keys ignoring case, so does this."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def key(self, paper: Paper) -> str:
        """The next unused key for ``paper``, remembered as used."""
        base = bibtex_key(paper)
        key = base
        if key.lower() in self._used:
            key = next(base + s for s in _suffixes() if (base + s).lower() not in self._used)
        self._used.add(key.lower())
        return key

    def __call__(self, paper: Paper) -> str:
        return to_bibtex(paper, key=self.key(paper))


def to_bibtex_all(papers: Iterable[Paper]) -> str:
    """One .bib text for ``papers``, in their order, entries separated by a blank line."""
    render = BibtexExport()
    return "\n".join(render(paper) for paper in papers)


def bibtex_entry_type(paper: Paper) -> str:
    """'article' for a paper with a journal's DOI (not arXiv's or another preprint
    server's), else 'misc'. There is no journal name to give, so an article has none."""
    doi = _verbatim(paper.doi or "").lower()
    return "article" if doi and not doi.startswith(_PREPRINT_DOI_PREFIXES) else "misc"


def bibtex_fields(paper: Paper) -> list[tuple[str, str]]:
    """(name, value as written after '=') for every non-empty field, in output order."""
    fields: list[tuple[str, str]] = []
    if author := _author_field(paper.authors):
        fields.append(("author", "{" + author + "}"))
    if title := bibtex_text(paper.title):
        fields.append(("title", "{" + _group(title) + "}"))
    if paper.published:
        fields.append(("year", f"{{{paper.published.year}}}"))
        fields.append(("month", _MONTHS[paper.published.month - 1]))  # macro, unquoted
    eprint = _verbatim(paper.arxiv_id or "")
    if eprint:
        fields += [("eprint", "{" + eprint + "}"), ("archivePrefix", "{arXiv}")]
        if paper.categories and (primary := bibtex_text(paper.categories[0])):
            fields.append(("primaryClass", "{" + primary + "}"))
    doi = _verbatim(paper.doi) if paper.doi else ""
    if doi:
        fields.append(("doi", "{" + doi + "}"))
    url = (
        _web_url(paper.abs_url)
        or (f"https://arxiv.org/abs/{eprint}" if eprint else None)
        or (f"https://doi.org/{doi}" if doi else None)
    )
    if url:
        fields.append(("url", "{" + url + "}"))
    if code := _web_url(paper.code_url):
        # An argument of \url inside another macro's argument must not hold a bare % or #.
        code = code.replace("%", r"\%").replace("#", r"\#")
        fields.append(("note", "{Code: \\url{" + code + "}}"))
    if abstract := bibtex_text(paper.abstract):
        fields.append(("abstract", "{" + abstract + "}"))
    return fields


def to_bibtex(paper: Paper, key: str | None = None) -> str:
    """One BibTeX entry for ``paper``; ``key`` overrides :func:`bibtex_key` (see
    :class:`BibtexExport` for keys unique across an export)."""
    body = ",\n".join(f"  {name} = {value}" for name, value in bibtex_fields(paper))
    return f"@{bibtex_entry_type(paper)}{{{key or bibtex_key(paper)},\n{body}\n}}\n"


def to_jsonl(paper: Paper) -> str:
    return json.dumps(paper.to_dict(), ensure_ascii=False) + "\n"
