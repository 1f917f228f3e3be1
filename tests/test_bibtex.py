"""BibTeX exports read back by real parsers (pybtex, bibtexparser) to the stored values.

"The same value" here means: the raw field string a parser returns, decoded by the small
LaTeX-text reader below (it knows only the text symbols the export may write and fails on
any other command or unbalanced brace), equals the stored text with control characters
dropped and whitespace collapsed. Verbatim fields (eprint, doi, url, the code link in note)
are compared after percent-decoding both sides, and must hold only RFC 3986 characters.
pybtex's latexcodec is not the reference: it leaves ``\\{``, ``\\$`` and brace groups in
its output and turns ``--`` into a dash, so it cannot tell a faithful export from a wrong one.
"""

from __future__ import annotations

import calendar
import json
import random
import re
import shutil
import subprocess
import unicodedata
from datetime import date
from pathlib import Path
from urllib.parse import unquote

import bibtexparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pybtex.database import BibliographyData, Entry  # type: ignore[import-untyped]
from pybtex.database.input.bibtex import Parser  # type: ignore[import-untyped]
from typer.testing import CliRunner

from papersift.cli import app
from papersift.export import BibtexExport, bibtex_key, to_bibtex, to_bibtex_all
from papersift.model import Paper
from papersift.store import papers as paper_store
from papersift.store.db import Database

# The only control sequences an export may contain: text symbols, and \url in the note.
_SYMBOL_WORDS = {
    "textbackslash": "\\",
    "textbraceleft": "{",
    "textbraceright": "}",
    "textasciitilde": "~",
    "textasciicircum": "^",
    "textless": "<",
    "textgreater": ">",
    "textbar": "|",
}
_SYMBOL_CHARS = set("$&%#_")
_TOKEN = re.compile(r"\\([A-Za-z]+)(\{\})?|\\(.)|([{}])|([^\\{}]+)", re.S)
_URL_CHARS = re.compile(r"^[A-Za-z0-9:/?#\[\]@!$&'()*+,;=\-._~%]*$")
_KEY = re.compile(r"^[A-Za-z0-9_:-]+$")
_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def latex_text(value: str) -> str:
    """Plain text of a field written as LaTeX text; ValueError on anything else."""
    out, depth = [], 0
    for word, empty, sym, brace, text in _TOKEN.findall(value):
        if word:
            if word not in _SYMBOL_WORDS or not empty:
                raise ValueError(f"LaTeX command \\{word} in {value!r}")
            out.append(_SYMBOL_WORDS[word])
        elif sym:
            if sym not in _SYMBOL_CHARS:
                raise ValueError(f"control symbol \\{sym} in {value!r}")
            out.append(sym)
        elif brace:
            depth += 1 if brace == "{" else -1
            if depth < 0:
                raise ValueError(f"brace closes early in {value!r}")
        else:
            out.append(text)
    if depth:
        raise ValueError(f"unbalanced braces in {value!r}")
    return "".join(out)


def expected_text(text: str) -> str:
    """The stored text as BibTeX can carry it: control characters, surrogates and bidi
    overrides dropped (whitespace ones become spaces), whitespace runs collapsed."""
    kept = []
    for ch in text:
        if ch.isspace():
            kept.append(" ")
        elif unicodedata.category(ch) not in ("Cc", "Cs") and ord(ch) not in _BIDI:
            kept.append(ch)
    return " ".join("".join(kept).split())


def verbatim(value: str) -> str:
    """Meaning of a verbatim field: percent-decoded, after checking it is URL-safe."""
    assert _URL_CHARS.match(value), value
    assert not re.search(r"%(?![0-9A-Fa-f]{2})", value), value
    return unquote(value)


def is_web(url: str | None) -> bool:
    return bool(url) and re.match(r"https?://", expected_text(url or ""), re.I) is not None


def parse_pybtex(text: str) -> BibliographyData:
    """Strict pybtex parse: any syntax error or duplicate key raises."""
    return Parser().parse_string(text)


def parse_bibtexparser(text: str) -> list[dict[str, str]]:
    """bibtexparser's reading: every block an entry, none failed."""
    library = bibtexparser.parse_string(text)
    assert not library.failed_blocks, library.failed_blocks
    assert len(library.blocks) == len(library.entries), library.blocks
    return [
        {"ENTRYTYPE": e.entry_type, "ID": e.key, **{f.key: f.value for f in e.fields}}
        for e in library.entries
    ]


def person_text(person: object) -> str:
    parts = ("first_names", "middle_names", "prelast_names", "last_names", "lineage_names")
    return " ".join(w for part in parts for w in getattr(person, part))


def assert_reads_back(paper: Paper, entry: Entry, other: dict[str, str]) -> None:
    """``entry`` (pybtex) and ``other`` (bibtexparser) hold exactly ``paper``'s values."""
    fields = {k.lower(): v for k, v in entry.fields.items()}
    names = [n for n in map(expected_text, paper.authors) if n]
    expected = {"title"} if expected_text(paper.title) else set()
    if names:
        expected.add("author")
        assert [latex_text(person_text(p)) for p in entry.persons["author"]] == names
        assert latex_text(other["author"]) == " and ".join(names)
    assert set(entry.persons) <= {"author"}
    if "title" in expected:
        raw = fields["title"]
        assert latex_text(raw) == expected_text(paper.title)
        # one brace group around the whole title: styles keep its capitals
        depth = 0
        for i, ch in enumerate(raw):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            assert depth > 0 or i == len(raw) - 1, raw
    if paper.published:
        expected |= {"year", "month"}
        assert fields["year"] == str(paper.published.year)
        assert fields["month"] == calendar.month_name[paper.published.month]
        assert other["month"] == calendar.month_abbr[paper.published.month].lower()
    eprint = verbatim(fields["eprint"]) if "eprint" in fields else ""
    if paper.arxiv_id and unquote(expected_text(paper.arxiv_id)):
        expected |= {"eprint", "archiveprefix"}
        assert eprint == unquote(expected_text(paper.arxiv_id))
        assert fields["archiveprefix"] == "arXiv"
        if paper.categories and expected_text(paper.categories[0]):
            expected.add("primaryclass")
            assert latex_text(fields["primaryclass"]) == expected_text(paper.categories[0])
    doi = unquote(expected_text(paper.doi or ""))
    if doi:
        expected.add("doi")
        assert verbatim(fields["doi"]) == doi
    if is_web(paper.abs_url):
        want_url = unquote(expected_text(paper.abs_url or ""))
    elif eprint:
        want_url = "https://arxiv.org/abs/" + eprint
    else:
        want_url = "https://doi.org/" + doi if doi else ""
    if want_url:
        expected.add("url")
        assert verbatim(fields["url"]) == want_url
    if is_web(paper.code_url):
        expected.add("note")
        match = re.fullmatch(r"Code: \\url\{(.*)\}", fields["note"])
        assert match, fields["note"]
        code = match.group(1).replace(r"\%", "%").replace(r"\#", "#")
        assert verbatim(code) == unquote(expected_text(paper.code_url or ""))
    if expected_text(paper.abstract):
        expected.add("abstract")
        assert latex_text(fields["abstract"]) == expected_text(paper.abstract)
    assert set(fields) | set(entry.persons) == expected  # nothing injected, nothing lost
    assert {k.lower() for k in other} - {"entrytype", "id"} == expected
    for name, value in fields.items():  # both parsers read the same raw strings
        if name != "month":
            assert other[next(k for k in other if k.lower() == name)] == value
    journal = doi and not doi.lower().startswith(("10.48550/", "10.1101/", "10.5281/"))
    assert entry.type == ("article" if journal else "misc")


def assert_export_reads_back(papers: list[Paper], text: str) -> None:
    """The whole export: one entry per paper, in order, unique safe keys, values read back."""
    data = parse_pybtex(text)
    others = parse_bibtexparser(text)
    assert len(data.entries) == len(others) == len(papers)
    keys = list(data.entries)
    assert all(_KEY.match(k) for k in keys), keys
    assert len({k.lower() for k in keys}) == len(keys)
    for paper, (key, entry), other in zip(papers, data.entries.items(), others, strict=True):
        assert other["ID"] == key
        assert_reads_back(paper, entry, other)
    for word in re.findall(r"\\([A-Za-z]+)", text):
        assert word in _SYMBOL_WORDS or word == "url", word


# --- the sample corpus through the real ingest and the real CLI ----------------------


def test_sample_corpus_exports_and_reads_back(seeded_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.bib"
    url = f"sqlite:///{seeded_home / 'papersift.db'}"
    result = CliRunner().invoke(app, ["--db", url, "export", "--format", "bibtex", "-o", str(out)])
    assert result.exit_code == 0, result.output
    db = Database(url)
    try:
        with db.session() as s:
            papers = list(paper_store.iter_papers(s))
    finally:
        db.dispose()
    assert len(papers) == 804
    text = out.read_text(encoding="utf-8")
    assert_export_reads_back(papers, text)
    # the two abstracts whose lone brace once made the whole file unreadable
    assert r"\textbraceleft{}Firstly, we propose" in text
    assert r"(iii) Multimodal reasoning\textbraceright{} resumes" in text


def test_hostile_records_through_ingest_and_cli(tmp_path: Path) -> None:
    from papersift.ingest import ingest_paths

    records = [
        {
            "id": "hostile-1",
            "title": "Bib }}, author = {Injected Author}, note = {x",
            "abstract": r"We $\input{/etc/passwd}$ and \immediate\write18{rm -rf ~} ^^5c 100% #1",
            "authors": ["<script>onload=alert('au1')>", "Ada Lovelace"],
            "published": "2024-03-05",
            "url": 'https://example.org/a b/{x}\\y?q="1"&r=<2>',
            "doi": "10.1000/x}{y",
        },
        {"id": "hostile-2", "title": "} @misc{evil, title={pwned", "authors": ["Ada Lovelace"]},
        {"id": "hostile-3", "title": "} @misc{evil, again", "authors": ["Ada Lovelace"]},
    ]
    src = tmp_path / "hostile.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'papersift.db'}"
    db = Database(url)
    try:
        assert not ingest_paths(db, [src]).failed
        with db.session() as s:
            papers = list(paper_store.iter_papers(s))
    finally:
        db.dispose()
    result = CliRunner().invoke(app, ["--db", url, "export", "--format", "bibtex"])
    assert result.exit_code == 0, result.output
    assert_export_reads_back(papers, result.stdout)
    data = parse_pybtex(result.stdout)
    assert "\\input" not in result.stdout and len(data.entries) == 3
    assert all(_KEY.match(k) for k in data.entries)
    assert {"lovelacemisc", "lovelacemisca"} <= set(data.entries)  # a clash, suffixed
    for entry in data.entries.values():
        assert "Injected" not in " ".join(map(str, entry.persons.get("author", [])))


# --- fuzz: hostile strings in every field ---------------------------------------------

_PIECES = [
    "{", "}", "}}", "}, author = {Injected Author", "@misc{x,", "@", "%", "#", "\\", "\\\\",
    "$", r"$\input{/etc/passwd}$", r"\include{x}", r"\write18{id}", r"\immediate", r"\openout",
    r"\catcode`\{=12", "^^5c", "~", "^", "_", "&", '"', "and", " AND ", ",", "others", "--",
    "<script>", "|", "]", "[", "é", "Müller", "Ørsted", "中文", "\x00", "\x1b[31m", "\u202e",
    "\ud800", "\n\n", "\t", "\r\n", "\u2028", "\xa0", "http://", "https://x.org/",
    "10.48550/", "%2",
]  # fmt: skip
hostile = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=12)), max_size=10).map(
    "".join
)
maybe = st.one_of(st.none(), hostile)
papers = st.builds(
    Paper,
    id=st.one_of(st.just("2301.00001"), hostile.filter(bool)),
    title=hostile,
    abstract=hostile,
    authors=st.lists(hostile, max_size=4),
    published=st.one_of(st.none(), st.dates(date(1990, 1, 1), date(2030, 12, 31))),
    categories=st.lists(hostile, max_size=2),
    doi=st.one_of(st.none(), hostile.map(lambda s: "10.1000/" + s), st.just("10.48550/arXiv.1")),
    arxiv_id=maybe,
    abs_url=st.one_of(maybe, hostile.map(lambda s: "https://example.org/" + s)),
    code_urls=st.lists(st.one_of(hostile, hostile.map(lambda s: "https://g.io/" + s)), max_size=2),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(papers, min_size=1, max_size=4))
def test_fuzzed_papers_read_back(batch: list[Paper]) -> None:
    assert_export_reads_back(batch, to_bibtex_all(batch))


@settings(max_examples=25, deadline=None)
@given(hostile.filter(bool), st.integers(2_000, 60_000))
def test_very_long_fields_read_back(chunk: str, size: int) -> None:
    long = (chunk * (size // len(chunk) + 1))[:size]
    paper = Paper(id="p1", title=long, abstract=long, authors=[long[:5000]], abs_url=None)
    assert_export_reads_back([paper], to_bibtex(paper))


# --- keys, entry types, the single-entry paths -----------------------------------------


def _paper(**kw: object) -> Paper:
    values: dict = {"id": "2301.00001", "title": "Attention Is All You Need"} | kw
    return Paper(**values)


def test_key_from_surname_year_first_long_title_word() -> None:
    p = _paper(authors=["Ashish Vaswani", "Noam Shazeer"], published=date(2017, 6, 12))
    assert bibtex_key(p) == "vaswani2017attention"
    assert (
        bibtex_key(_paper(authors=["José Müller-Ørsted"], title="Über das")) == "mullerorsteduber"
    )
    assert bibtex_key(_paper(authors=["Lovelace, Ada"], title="On Graphs")) == "lovelacegraphs"
    assert bibtex_key(_paper(authors=["Martin Luther King Jr."])) == "kingattention"


def test_key_falls_back_to_a_safe_form_of_the_id() -> None:
    assert bibtex_key(_paper(id="hep-th/9901001")) == "hep-th_9901001"
    assert bibtex_key(_paper(id="2301.00001", authors=["王小明"])) == "2301_00001"
    assert bibtex_key(_paper(id="<>{}", authors=["王"])) == "paper"
    hostile = _paper(authors=["<script>onload=alert('au1')>"], published=date(2024, 1, 1))
    assert bibtex_key(hostile) == "scriptonloadalertau2024attention"


def test_clashing_keys_get_letter_suffixes_in_one_export() -> None:
    same = [
        _paper(id=f"x{i}", authors=["Ada Lovelace"], published=date(2024, 1, 1)) for i in range(30)
    ]
    same.append(
        _paper(id="y", authors=["Ada LOVELACE"], title="Attention b", published=date(2024, 1, 1))
    )
    keys = list(parse_pybtex(to_bibtex_all(same)).entries)
    assert keys[:3] == ["lovelace2024attention", "lovelace2024attentiona", "lovelace2024attentionb"]
    assert keys[26] == "lovelace2024attentionz" and keys[27] == "lovelace2024attentionaa"
    assert keys[30] == "lovelace2024attentionad"
    assert len({k.lower() for k in keys}) == 31
    render = BibtexExport()  # a fresh export starts again
    assert render.key(same[0]) == "lovelace2024attention"


def test_entry_type_and_arxiv_fields() -> None:
    journal = _paper(doi="10.18653/v1/2023.acl-long.42", authors=["A B"], categories=["cs.CL"])
    arxiv_doi = _paper(doi="10.48550/arXiv.2301.00001", arxiv_id="2301.00001", categories=["cs.CL"])
    biorxiv = _paper(doi="10.1101/2024.01.01.123456")
    assert to_bibtex(journal).startswith("@article{b")
    assert to_bibtex(arxiv_doi).startswith("@misc{2301_00001,")
    assert to_bibtex(biorxiv).startswith("@misc{")
    text = to_bibtex(arxiv_doi)
    for line in ("eprint = {2301.00001}", "archivePrefix = {arXiv}", "primaryClass = {cs.CL}"):
        assert line in text
    assert "url = {https://arxiv.org/abs/2301.00001}" in text
    dated = to_bibtex(_paper(published=date(2023, 9, 30)))
    assert "year = {2023},\n  month = sep\n}" in dated
    assert "author" not in to_bibtex(_paper()) and "doi" not in to_bibtex(_paper())


def test_code_link_note_and_non_web_links_dropped() -> None:
    p = _paper(code_urls=["https://github.com/a/b_c"], abs_url="javascript:alert(1)")
    text = to_bibtex(p)
    assert r"note = {Code: \url{https://github.com/a/b_c}}" in text
    assert "javascript" not in text
    assert "note" not in to_bibtex(_paper(code_urls=["javascript:alert(1)"]))


def test_names_that_would_split_are_braced_others_open() -> None:
    text = to_bibtex(_paper(authors=["Ada Lovelace", "Tom and Jerry", "Smith, Jr, John", "others"]))
    assert "author = {Ada Lovelace and {Tom and Jerry} and {Smith, Jr, John} and {others}}" in text
    persons = next(iter(parse_pybtex(text).entries.values())).persons["author"]
    assert [str(p) for p in persons][0] == "Lovelace, Ada"  # styles can still abbreviate
    assert len(persons) == 4


def test_title_starting_with_a_backslash_is_not_a_bibtex_special_character() -> None:
    text = to_bibtex(_paper(title="\\LaTeX{} Tricks"))
    assert r"title = {{{}\textbackslash{}LaTeX\textbraceleft{}\textbraceright{} Tricks}}" in text


@pytest.mark.parametrize("bad", ["", "   ", "\x00\x1b"])
def test_empty_title_and_authors_are_omitted_not_written_empty(bad: str) -> None:
    text = to_bibtex(_paper(title=bad, authors=[bad], abstract=bad))
    entry = parse_pybtex(text).entries["2301_00001"]
    assert "title" not in entry.fields and not entry.persons and "abstract" not in entry.fields


# --- what TeX itself makes of a hostile export (where TeX Live is installed) -----------

_DOC = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage{natbib}
\usepackage{hyperref}
\begin{document}
\nocite{*}
\bibliographystyle{STYLE}
\bibliography{refs}
\end{document}
"""


def _hostile_batch(n: int) -> list[Paper]:
    """Deterministic hostile papers in scripts pdflatex's fonts have, plus TeX attacks."""
    rng = random.Random(7)
    pieces = [p for p in _PIECES if all(ord(c) < 0x250 for c in p)]

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))

    attack = r"$\input{/etc/passwd}$ \immediate\openout5=pwned.tex \immediate\write5{x} "
    return [
        Paper(
            id=f"{rng.getrandbits(40):010x}",
            title=text(),
            abstract=attack + text(),
            authors=[text() for _ in range(rng.randint(0, 3))],
            published=date(2000 + i % 30, 1 + i % 12, 1) if i % 3 else None,
            doi=f"10.1000/{text()}" if i % 4 == 0 else None,
            arxiv_id=text() if i % 5 == 0 else None,
            categories=[text()],
            abs_url=f"https://x.org/{text()}" if i % 2 else None,
            code_urls=[f"https://g.io/{text()}"] if i % 3 == 0 else [],
        )
        for i in range(n)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("style", ["plainnat", "unsrt"])
def test_bibtex_and_pdflatex_typeset_a_hostile_export(style: str, tmp_path: Path) -> None:
    if not (shutil.which("bibtex") and shutil.which("pdflatex")):
        pytest.skip("TeX Live not installed (apt-get install texlive-latex-recommended)")
    batch = _hostile_batch(80)
    (tmp_path / "refs.bib").write_text(to_bibtex_all(batch), encoding="utf-8")
    (tmp_path / "doc.tex").write_text(_DOC.replace("STYLE", style), encoding="utf-8")
    latex = ["pdflatex", "-interaction=nonstopmode", "-no-shell-escape", "doc.tex"]
    subprocess.run(latex, cwd=tmp_path, capture_output=True, timeout=120)
    bib = subprocess.run(["bibtex", "doc"], cwd=tmp_path, capture_output=True, timeout=120)
    assert bib.returncode < 2, (tmp_path / "doc.blg").read_text(errors="replace")  # warnings only
    subprocess.run(latex, cwd=tmp_path, capture_output=True, timeout=120)
    log = (tmp_path / "doc.log").read_text(encoding="latin-1")
    errors = [line for line in log.splitlines() if line.startswith("! ")]
    assert errors == [], errors
    assert (tmp_path / "doc.bbl").read_text(encoding="utf-8").count(r"\bibitem") == len(batch)
    assert "(/etc/passwd" not in log and not (tmp_path / "pwned.tex").exists()
