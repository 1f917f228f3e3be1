"""Library import and export on real SQLite and PostgreSQL: references matched by arXiv
id, then DOI, then title, the rest added as papers through the ingest merge; one
transaction; exports read back by the real parsers (bibtexparser, rispy, json); hostile
files never crash the readers (hypothesis)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import bibtexparser
import pytest
import rispy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from papersift.library import formats, service
from papersift.library.export import to_csl_json, to_ris
from papersift.library.formats import LibraryFormatError, parse
from papersift.model import Paper, normalize_title
from papersift.store import library as store
from papersift.store.db import Database
from papersift.store.schema import PaperRow
from papersift.store.schema_accounts import UserRow
from papersift.store.schema_library import LibraryEntryRow, LibraryImportRow, TagRow

FIXTURES = Path(__file__).parent / "fixtures" / "library"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
CORPUS = [
    ("1706.03762", "1706.03762", None, "Attention Is All You Need"),
    ("pnature", None, "10.1038/nature14539", "Deep learning (a review)"),
    ("psurgery", None, None, "Causal Inference by String Diagram Surgery"),
]


def _user(db: Database, email: str = "alice@example.org") -> int:
    with db.session() as s:
        row = UserRow(email=email, name="", is_admin=False, created_at=T0)
        s.add(row)
        s.flush()
        return row.id


@pytest.fixture
def corpus(db: Database) -> Database:
    with db.session() as s:
        for pid, arxiv, doi, title in CORPUS:
            s.add(
                PaperRow(
                    id=pid,
                    arxiv_id=arxiv,
                    doi=doi,
                    title=title,
                    title_key=normalize_title(title),
                    abstract="stored abstract",
                    authors=["Stored Author"],
                    categories=[],
                    code_urls=[],
                    sources=["test"],
                    first_seen=T0,
                    modified_at=T0,
                    content_hash="0" * 40,
                )
            )
    return db


def _count(db: Database, table: type) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(table)) or 0


def test_bibtex_import_matches_adds_and_fails_per_entry(corpus: Database) -> None:
    db = corpus
    uid = _user(db)
    indexed: list[list[str]] = []
    out = service.import_file(
        db,
        uid,
        (FIXTURES / "zotero.bib").read_bytes(),
        filename="zotero.bib",
        index=indexed.append,
    )
    got = [(e.status, e.paper_id, e.reason) for e in out.entries]
    assert got[:3] == [
        ("matched", "1706.03762", "arXiv id"),
        ("matched", "pnature", "DOI"),  # the DOI's case differs, the title does too
        ("matched", "psurgery", "title"),
    ]
    assert got[3][0] == "added" and got[3][1]
    assert got[4] == ("failed", None, "no title")
    assert (out.count("matched"), out.count("added"), out.count("failed")) == (3, 1, 1)
    assert out.tag == "zotero" and out.format == "bibtex"
    new_id = got[3][1]
    assert indexed == [[new_id]]
    with db.session() as s:
        row = s.get(PaperRow, new_id)
        assert row is not None and row.title == "A Gröbner basis view of LaTeX $\\alpha$-renaming"
        assert row.authors == ["Jörg Müller", "World Health Organization"]
        assert row.abstract == "We study 50% of the interesting cases."
        assert row.sources == ["library-import"]
        stored = s.get(PaperRow, "pnature")
        assert stored is not None and stored.authors == ["Stored Author"]  # corpus untouched
        tag = store.tag_by_name(s, uid, "zotero")
        assert tag is not None
        assert set(store.saved_ids(s, uid, tag.id)) == {"1706.03762", "pnature", "psurgery", new_id}
        report = store.import_report(s, uid, out.import_id)
        assert report is not None and (report.matched, report.added, report.failed) == (3, 1, 1)
    again = service.import_report(db, uid, out.import_id)
    assert [e.status for e in again.entries] == [e.status for e in out.entries]
    # Importing the same file again adds nothing new: the added paper now matches.
    second = service.import_file(db, uid, (FIXTURES / "zotero.bib").read_bytes(), filename="z.bib")
    assert second.count("added") == 0 and second.count("matched") == 4
    assert second.entries[3].paper_id == new_id


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mendeley.ris", ["matched", "matched", "added", "failed"]),
        ("zotero.json", ["matched", "matched", "added", "failed", "failed"]),
        ("scholar.bib", ["added", "failed", "added"]),
    ],
)
def test_ris_csl_and_scholar_imports(corpus: Database, name: str, expected: list[str]) -> None:
    uid = _user(corpus)
    out = service.import_file(
        corpus, uid, (FIXTURES / name).read_bytes(), filename=name, tag_name="Imported"
    )
    assert [e.status for e in out.entries] == expected
    if name == "scholar.bib":  # Google Scholar's "journal = {arXiv preprint arXiv:...}"
        assert out.entries[0].paper_id == "1412.6980"
    else:
        assert [e.paper_id for e in out.entries[:2]] == ["pnature", "1706.03762"][
            :: (1 if name == "mendeley.ris" else -1)
        ]


def test_duplicates_inside_one_file_become_one_paper(db: Database) -> None:
    uid = _user(db)
    text = b"""@misc{a, title={Brand new idea about caching}}
@misc{b, title={Brand New Idea About Caching!}}"""
    out = service.import_file(db, uid, text, filename="dups.bib")
    assert [e.status for e in out.entries] == ["added", "matched"]
    assert out.entries[1].reason == "same paper as entry 1"
    assert out.entries[0].paper_id == out.entries[1].paper_id
    assert _count(db, PaperRow) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"@misc{a, title={x\x00\x00}}", "binary"),
        (b"\x80\x81 not utf-8", "UTF-8"),
        (b"just some words", "not a BibTeX"),
        (b"[1, 2", "not valid JSON"),
        (b'{"a": ' * 100_000, "nested too deeply"),
        (b'"a string"', "list of items"),
        (b"TY  - JOUR\nTI  - cut off\n", "cut off"),
        (b"@comment{nothing here}", "no references"),
        (b" " * (formats.MAX_IMPORT_BYTES + 1), "limit"),
    ],
)
def test_bad_files_change_nothing(db: Database, data: bytes, message: str) -> None:
    uid = _user(db)
    name = "x.json" if data.startswith((b"[", b"{", b'"')) else "x.txt"
    with pytest.raises(service.LibraryError, match=message):
        service.import_file(db, uid, data, filename=name)
    assert _count(db, PaperRow) == _count(db, TagRow) == _count(db, LibraryImportRow) == 0


def test_too_many_entries(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = _user(db)
    monkeypatch.setattr(formats, "MAX_IMPORT_ENTRIES", 3)
    text = "\n".join(f"@misc{{k{i}, title={{Paper number {i}}}}}" for i in range(4))
    with pytest.raises(service.LibraryError, match="limit is 3"):
        service.import_file(db, uid, text.encode(), filename="big.bib")
    assert _count(db, PaperRow) == 0


def test_a_database_failure_rolls_everything_back(db: Database) -> None:
    """The new papers are written before the tag and its entries: when the database refuses
    the tag (here: its owner does not exist, a foreign key), the papers go too."""
    with pytest.raises(service.LibraryError, match="nothing was imported"):
        service.import_file(db, 9999, b"@misc{a, title={A fresh paper title}}", filename="n.bib")
    assert _count(db, PaperRow) == _count(db, TagRow) == _count(db, LibraryEntryRow) == 0


def test_tag_limit(db: Database) -> None:
    uid = _user(db)
    with db.session() as s:
        for i in range(service.MAX_TAGS):
            store.ensure_tag(s, uid, f"t{i}")
    with pytest.raises(service.LibraryError, match="500 tags"):
        service.import_file(db, uid, b"@misc{a, title={A fresh paper title}}", filename="n.bib")
    assert _count(db, PaperRow) == 0


def _papers() -> list[Paper]:
    return [
        Paper(
            id="1706.03762",
            arxiv_id="1706.03762",
            title="Attention Is All You Need",
            abstract="Line one\nER  - \nTY  - JOUR\nan injected reference?",
            authors=["Ashish Vaswani", "Noam Shazeer"],
            published=date(2017, 6, 12),
            categories=["cs.CL"],
        ),
        Paper(
            id="pnature",
            doi="10.1038/nature14539",
            title='Deep learning "quoted" {braced} \\input{x}',
            authors=["Yann LeCun"],
            published=date(2015, 5, 27),
        ),
    ]


def test_ris_export_reads_back_with_rispy() -> None:
    refs = rispy.loads(to_ris(_papers()))
    assert len(refs) == 2  # the abstract's "ER  -" did not end the reference early
    assert refs[0]["title"] == "Attention Is All You Need"
    assert refs[0]["authors"] == ["Ashish Vaswani", "Noam Shazeer"]
    assert refs[0]["abstract"] == "Line one ER - TY - JOUR an injected reference?"
    assert refs[0]["urls"] == ["https://arxiv.org/abs/1706.03762"]
    assert refs[1]["doi"] == "10.1038/nature14539" and refs[1]["type_of_reference"] == "JOUR"
    again = parse(to_ris(_papers()).encode(), "x.ris")
    assert [e.arxiv_id for e in again.entries] == ["1706.03762", None]
    assert [e.doi for e in again.entries] == [None, "10.1038/nature14539"]


def test_csl_json_export_reads_back() -> None:
    items = json.loads(to_csl_json(_papers()))
    assert items[0]["type"] == "article" and items[0]["number"] == "arXiv:1706.03762"
    assert items[0]["author"][0] == {"family": "Vaswani", "given": "Ashish"}
    assert items[0]["issued"] == {"date-parts": [[2017, 6, 12]]}
    assert items[1]["DOI"] == "10.1038/nature14539"
    again = parse(to_csl_json(_papers()).encode(), "x.json")
    assert [e.title for e in again.entries] == [p.title for p in _papers()]
    assert [e.authors for e in again.entries] == [p.authors for p in _papers()]


def test_tag_export_in_every_format(corpus: Database) -> None:
    uid = _user(corpus)
    service.save(corpus, uid, "1706.03762", "RL")
    service.save(corpus, uid, "pnature", "RL")
    bib = service.export_tag(corpus, uid, "RL", "bibtex")
    lib = bibtexparser.parse_string(bib)
    assert not lib.failed_blocks and len(lib.entries) == 2
    assert {e.fields_dict["eprint"].value for e in lib.entries if "eprint" in e.fields_dict} == {
        "1706.03762"
    }
    assert len(rispy.loads(service.export_tag(corpus, uid, "RL", "ris"))) == 2
    assert len(json.loads(service.export_tag(corpus, uid, "RL", "csl-json"))) == 2
    with pytest.raises(service.LibraryError):
        service.export_tag(corpus, uid, "RL", "docx")
    with pytest.raises(service.NotFound):
        service.export_tag(corpus, uid, "nope", "ris")


def test_round_trip_export_then_import_matches_everything(corpus: Database) -> None:
    alice, bob = _user(corpus), _user(corpus, "bob@example.org")
    for pid in ("1706.03762", "pnature", "psurgery"):
        service.save(corpus, alice, pid, "Mine")
    for fmt, name in (("bibtex", "a.bib"), ("ris", "a.ris"), ("csl-json", "a.json")):
        data = service.export_tag(corpus, alice, "Mine", fmt).encode()
        out = service.import_file(corpus, bob, data, filename=name, tag_name=fmt)
        assert [e.status for e in out.entries] == ["matched"] * 3, (fmt, out.entries)
        assert {e.paper_id for e in out.entries} == {"1706.03762", "pnature", "psurgery"}


# -- hostile input: the readers answer an entry list or LibraryFormatError, nothing else ---

_BIB_BITS = st.sampled_from(
    ["@article{", "@misc(", "}", "{", "title", "=", '"', ",", "\\", "@string{x=", "#", "\n", "%"]
)
_RIS_BITS = st.sampled_from(
    ["TY  - ", "ER  - ", "TI  - ", "AU  - ", "DO  - 10.", "\n", "\r\n", "x"]
)


def _tolerated(data: bytes, name: str) -> None:
    try:
        parsed = parse(data, name)
    except LibraryFormatError as exc:
        assert str(exc)
        return
    assert parsed.entries
    for entry in parsed.entries:
        assert entry.error or entry.title


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_BIB_BITS, st.text(max_size=8)), max_size=40))
def test_fuzz_bibtex(parts: list[str]) -> None:
    _tolerated("".join(parts).encode("utf-8", "surrogatepass"), "f.bib")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(_RIS_BITS, st.text(max_size=8)), max_size=40))
def test_fuzz_ris(parts: list[str]) -> None:
    _tolerated("".join(parts).encode("utf-8", "surrogatepass"), "f.ris")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["title", "author", "DOI", "URL", "issued", "date-parts", "id", "x"]),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(_JSON)
def test_fuzz_csl_json(value: object) -> None:
    _tolerated(json.dumps(value).encode(), "f.json")


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_any_bytes(data: bytes) -> None:
    for name in ("f.bib", "f.ris", "f.json", "f"):
        _tolerated(data, name)


def test_account_export_and_deletion_include_the_library(corpus: Database) -> None:
    from papersift.accounts import manage

    uid, other = _user(corpus), _user(corpus, "bob@example.org")
    for who in (uid, other):
        service.save(corpus, who, "1706.03762", "RL")
        service.set_note(corpus, who, "1706.03762", "mine")
    data = manage.export(corpus, uid)["library"]
    assert data["tags"][0]["name"] == "RL"
    assert data["tags"][0]["papers"][0]["paper_id"] == "1706.03762"
    assert data["notes"] == [
        {"paper_id": "1706.03762", "text": "mine", "updated_at": data["notes"][0]["updated_at"]}
    ]
    assert manage.delete_account(corpus, uid)
    with corpus.session() as s:
        assert set(s.scalars(select(TagRow.user_id))) == {other}
        assert set(s.scalars(select(LibraryEntryRow.user_id))) == {other}
