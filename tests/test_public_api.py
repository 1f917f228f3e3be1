"""The Python API (``import papersift``) against real SQLite homes: the session's indexed
seed corpus for reading, private copies of it for writing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

import papersift
from papersift.cli import app
from papersift.store.db import DatabaseError

from .digest_support import copy_home
from .test_ingest_seeds import EXPECTED_SIZES

FIXTURES = Path(__file__).parent / "fixtures"
FIRST_PAGE = "000_e3b0215ea9dd5350"
SEED_PAPERS = 804 + 2  # the seed pages and the web fixtures' two extra papers


def _db_url(home: Path) -> str:
    return f"sqlite:///{home / 'papersift.db'}"


@pytest.fixture(scope="module")
def lib(web_home: Path) -> Iterator[papersift.Library]:
    """The shared indexed home, only read here."""
    with papersift.Library(home=web_home, db_url=_db_url(web_home)) as library:
        yield library


@pytest.fixture
def own_lib(web_home: Path, tmp_path: Path) -> Iterator[papersift.Library]:
    """A private copy of the indexed home, for writing."""
    home = tmp_path / "home"
    copy_home(web_home, home)
    with papersift.Library(home=home, db_url=_db_url(home)) as library:
        yield library


def test_import_papersift_is_light_and_names_the_api() -> None:
    """``import papersift`` loads no search stack; the API names load on first use."""
    code = (
        "import sys, papersift; assert 'papersift.search' not in sys.modules; "
        "assert 'onnxruntime' not in sys.modules; "
        "from papersift.api import Library; assert papersift.Library is Library; "
        "print(sorted(papersift.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "Library" in out.stdout and "SearchResults" in out.stdout
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        papersift.nothing_here  # noqa: B018


def test_counts_stats_and_collections(lib: papersift.Library) -> None:
    assert lib.count() == SEED_PAPERS
    stats = lib.stats()
    assert stats["papers"] == SEED_PAPERS
    assert stats["collections"] == EXPECTED_SIZES
    assert sum(stats["sources"].values()) >= 804
    sizes = {c.name: c.size for c in lib.collections()}
    assert sizes == EXPECTED_SIZES


def test_stats_and_export_are_what_the_cli_prints(lib: papersift.Library, web_home: Path) -> None:
    runner = CliRunner()
    stats = runner.invoke(app, ["--db", _db_url(web_home), "stats", "--json"])
    assert stats.exit_code == 0
    assert json.loads(stats.stdout.splitlines()[-1]) == lib.stats()
    bib = runner.invoke(
        app, ["--db", _db_url(web_home), "export", "-f", "bibtex", "-c", FIRST_PAGE]
    )
    assert bib.exit_code == 0
    assert bib.stdout == "".join(lib.export("bibtex", collection=FIRST_PAGE))


def test_paper_by_any_reference_and_unknown(lib: papersift.Library) -> None:
    paper = lib.paper("hep-th/9901001")
    assert paper is not None and paper.title.startswith("Strings on a slash")
    assert paper.first_seen is not None and paper.first_seen.utcoffset() is not None
    assert lib.paper("9999.99999") is None
    assert lib.paper("   ") is None
    got = lib.papers(["hep-th/9901001", "missing", "phostile00001", "hep-th/9901001"])
    assert [p.id for p in got] == ["hep-th/9901001", "phostile00001"]


def test_search_modes_filters_and_paging(lib: papersift.Library) -> None:
    results = lib.search("language model quantization", k=5)
    assert results.mode == "hybrid" and len(results.hits) == 5 and results.total >= 5
    scores = [h.score for h in results.hits]
    assert scores == sorted(scores, reverse=True)
    page2 = lib.search("language model quantization", k=5, offset=5)
    assert not {h.paper_id for h in page2.hits} & {h.paper_id for h in results.hits}
    lexical = lib.search("quantization", k=3, mode="lexical")
    assert lexical.mode == "lexical" and len(lexical.hits) == 3

    with_code = lib.search("transformer", k=10, has_code=True)
    assert with_code.hits
    assert all(p.code_urls for p in lib.papers(h.paper_id for h in with_code.hits))
    in_page = lib.search("transformer", k=10, collection=FIRST_PAGE)
    assert in_page.hits
    for hit in in_page.hits:
        assert FIRST_PAGE in {name for name, _rank in lib.collections_of(hit.paper_id)}
    recent = lib.search("transformer", k=10, date_from=date(2100, 1, 1))
    assert recent.hits == []


def test_search_rejects_bad_requests_with_a_message(lib: papersift.Library) -> None:
    with pytest.raises(papersift.SearchError, match="unknown filter colour"):
        lib.search("x", colour="red")
    with pytest.raises(papersift.SearchError, match="unknown mode"):
        lib.search("x", mode="fuzzy")
    with pytest.raises(papersift.SearchError, match="k must be between"):
        lib.search("x", k=0)
    with pytest.raises(papersift.SearchError, match="start date is after the end date"):
        lib.search("x", date_from=date(2024, 2, 1), date_to=date(2024, 1, 1))
    empty = lib.search("   ")
    assert empty.hits == [] and empty.message == "empty query"


def test_similar_leaves_the_paper_out_and_unknown_is_keyerror(lib: papersift.Library) -> None:
    (first,) = lib.search("binary ternary natural language generation", k=1, mode="lexical").hits
    hits = lib.similar(first.paper_id, k=4)
    assert len(hits) == 4 and first.paper_id not in {h.paper_id for h in hits}
    with pytest.raises(KeyError):
        lib.similar("9999.99999")


def test_export_everything_and_one_collection(lib: papersift.Library) -> None:
    rows = [json.loads(line) for line in "".join(lib.export()).splitlines()]
    assert len(rows) == SEED_PAPERS and len({r["id"] for r in rows}) == SEED_PAPERS
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    entries = "".join(lib.export("bibtex", collection=FIRST_PAGE)).split("\n@")
    assert len(entries) == EXPECTED_SIZES[FIRST_PAGE]


def test_export_refuses_unknown_format_and_collection_at_once(lib: papersift.Library) -> None:
    with pytest.raises(papersift.LibraryError, match="unknown format 'xml'"):
        lib.export("xml")
    with pytest.raises(papersift.LibraryError, match="no collection named 'nope'"):
        lib.export("jsonl", collection="nope")


def test_ingest_reports_each_file_and_makes_papers_searchable(
    own_lib: papersift.Library, tmp_path: Path
) -> None:
    calls: list[str] = []
    records: list[int] = []

    def on_file_start(path: Path):
        calls.append(f"start {path.name}")
        return records.append

    report = own_lib.ingest(
        [FIXTURES / "oai_arxivraw.xml", tmp_path / "missing.jsonl"],
        on_files=lambda files: calls.append(f"files {len(files)}"),
        on_file_start=on_file_start,
        on_file_done=lambda result: calls.append(f"done {Path(result.path).name} {result.ok}"),
    )
    assert calls == ["files 1", "start oai_arxivraw.xml", "done oai_arxivraw.xml True"]
    assert sum(records) == report.files[1].records > 0
    assert not report.ok and len(report.failed) == 1
    assert "no such file or folder" in (report.failed[0].error or "")
    assert report.added == report.files[1].added > 0
    assert report.index is not None and report.index_error is None
    assert report.index.indexed == report.added and report.index.pending_vectors == 0
    assert own_lib.count() == SEED_PAPERS + report.added
    data = report.to_dict()
    assert data["added"] == report.added and data["failed"] == 1
    for mode in ("lexical", "semantic", "hybrid"):
        hits = own_lib.search("retrieval augmented protein language models", k=3, mode=mode).hits
        assert "2303.11111" in {h.paper_id for h in hits}, mode


def test_ingest_of_a_bad_file_changes_nothing(own_lib: papersift.Library, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "Fine", "abstract": "A paper."}\n{"title": ')
    before = "".join(own_lib.export())
    report = own_lib.ingest([bad])
    assert not report.ok and report.added == 0
    assert str(bad) in (report.failed[0].error or "")
    assert report.index is None and report.index_error is None
    assert "".join(own_lib.export()) == before


def test_ingest_keeps_papers_when_the_index_cannot_be_updated(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "index").write_text("a file where the index folder belongs")
    with papersift.Library(home=home, db_url=_db_url(home)) as library:
        report = library.ingest([FIXTURES / "oai_arxivraw.xml"])
        assert report.ok and report.added > 0
        assert report.index is None and report.index_error
        paper = library.paper("2303.11111")
    assert paper is not None and paper.title == "Retrieval-Augmented Protein Language Models"


def test_opening_refuses_bad_arguments(tmp_path: Path) -> None:
    from papersift.settings import load_settings

    settings = load_settings(tmp_path / "home", _db_url(tmp_path / "home"))
    with pytest.raises(papersift.LibraryError, match="not both"):
        papersift.Library(home=tmp_path, settings=settings)
    with pytest.raises(DatabaseError, match="not a database URL"):
        papersift.Library(home=tmp_path / "home", db_url="::nonsense::")
    assert not (tmp_path / "home").exists()


def test_a_library_on_an_open_database_leaves_it_open(web_home: Path, tmp_path: Path) -> None:
    from papersift.settings import load_settings
    from papersift.store.db import Database

    home = tmp_path / "home"
    copy_home(web_home, home)
    settings = load_settings(home, _db_url(home))
    database = Database(settings.db_url)
    try:
        with papersift.Library(settings=settings, db=database) as library:
            assert library.count() == SEED_PAPERS
        with database.session() as session:  # still usable: the caller owns it
            assert session.connection() is not None
        with papersift.Library(settings=settings, db=database) as again:
            assert again.db is database
    finally:
        database.dispose()


def test_the_same_calls_on_sqlite_and_postgresql(db, tmp_path: Path) -> None:
    """A library on either database: ingest, read back by DOI, search, export."""
    from papersift.settings import load_settings

    settings = load_settings(tmp_path / "home", db.url)
    with papersift.Library(settings=settings, db=db) as library:
        report = library.ingest([FIXTURES / "oai_arxiv.xml"])
        assert report.ok and report.added > 0 and report.index_error is None
        paper = library.paper("10.1145/3539618.3591999")
        assert paper is not None and paper.arxiv_id == "2301.01234"
        assert paper.first_seen is not None and paper.first_seen.utcoffset() is not None
        hits = library.search(paper.title, k=3, mode="lexical").hits
        assert hits and hits[0].paper_id == paper.id
        exported = [json.loads(line) for line in "".join(library.export()).splitlines()]
        assert len(exported) == library.count() == report.added
        assert library.stats()["papers"] == report.added
