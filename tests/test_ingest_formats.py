"""Every input format from small hand-written files, merging across formats, idempotence.

Parsers are checked directly (no database); storage behaviour runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import gzip
import itertools
import shutil
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from papersift.ingest import IngestError, ingest_paths
from papersift.ingest.arxiv_xml import parse_atom, parse_oai
from papersift.ingest.formats import detect_format, open_source
from papersift.ingest.records import extract_code_urls
from papersift.store import collections as coll_store
from papersift.store import papers as paper_store
from papersift.store.schema import PaperRow

FIXTURES = Path(__file__).parent / "fixtures"


def _records(name: str) -> list:
    return list(open_source(FIXTURES / name).records)


def _papers(db) -> dict[str, dict]:
    with db.session() as s:
        return {p.id: p.to_dict() for p in paper_store.iter_papers(s)}


def _empty(db) -> None:
    with db.engine.begin() as conn:
        for table in ("collection_entries", "collections", "papers"):
            conn.exec_driver_sql(f"DELETE FROM {table}")


def _by_arxiv(db, arxiv_id: str) -> dict:
    with db.session() as s:
        paper = paper_store.get_paper(s, arxiv_id)
    assert paper is not None, arxiv_id
    return paper.to_dict()


# --- parsers ------------------------------------------------------------------------------


def test_detects_each_format_from_content():
    expected = {
        "arxiv_api.xml": "atom",
        "oai_arxiv.xml": "oai",
        "oai_arxivraw.xml": "oai",
        "oai_dc.xml": "oai",
        "snapshot.jsonl": "snapshot",
        "generic.jsonl": "jsonl",
        "generic.csv": "csv",
        "merge_page.txt": "listing",
    }
    assert {name: detect_format(FIXTURES / name) for name in expected} == expected


def test_atom_entries_fields():
    page = parse_atom((FIXTURES / "arxiv_api.xml").read_bytes())
    assert page.total == 2 and page.start_index == 0
    first, old = page.records
    assert first.arxiv_id == "2305.04321"  # version suffix dropped
    assert first.title == "Dense Passage Retrieval for Low-Resource Languages"
    assert first.abstract.startswith("We study dense passage retrieval when only")
    assert first.authors == ["Ada Lovelace", "Charles Babbage"]
    assert first.published == date(2023, 5, 7) and first.updated == date(2023, 6, 1)
    assert first.categories == ["cs.IR", "cs.CL"]
    assert first.doi == "10.18653/v1/2023.acl-long.42"
    assert first.pdf_url == "http://arxiv.org/pdf/2305.04321v2"
    # the abstract's link ends a sentence; the comment's link is followed by ';'
    assert first.code_urls == [
        "https://github.com/lowres/dpr-lr",
        "https://huggingface.co/lowres/dpr-lr-base",
    ]
    assert old.arxiv_id == "hep-th/9901001"


def test_atom_error_entry_is_a_clear_error():
    with pytest.raises(IngestError) as err:
        parse_atom((FIXTURES / "arxiv_api_error.xml").read_bytes())
    assert "arXiv API error: incorrect id format for 1234.12345v" in str(err.value)
    assert "line 10" in str(err.value)


def test_oai_arxiv_format_with_deleted_record_and_token():
    page = parse_oai((FIXTURES / "oai_arxiv.xml").read_bytes())
    assert [r.arxiv_id for r in page.records] == ["2301.01234", "2302.00007"]
    assert page.deleted == 1
    assert page.resumption_token == "6711482|1001" and page.total == 5
    rec = page.records[0]
    assert rec.title == "Sparse Retrieval with Learned Term Weights"
    assert rec.authors == ["Ada Lovelace", "Grace Hopper"]
    assert rec.published == date(2023, 1, 3) and rec.updated == date(2023, 2, 28)
    assert rec.doi == "10.1145/3539618.3591999"
    assert rec.categories == ["cs.IR", "cs.CL"]
    assert rec.code_urls == ["https://github.com/sparse/ltw", "https://gitlab.com/sparse/ltw"]
    assert page.records[1].authors == ["Alan M. Turing"]


def test_oai_arxivraw_format():
    page = parse_oai((FIXTURES / "oai_arxivraw.xml").read_bytes())
    assert page.deleted == 1 and page.resumption_token is None
    (rec,) = page.records
    assert rec.arxiv_id == "2303.11111"
    assert rec.authors == ["Rosalind Franklin", "Dorothy Hodgkin", "Barbara McClintock"]
    assert rec.published == date(2023, 3, 20) and rec.updated == date(2023, 4, 7)
    assert rec.code_urls == ["https://huggingface.co/datasets/protein/ralm"]


def test_oai_dc_format():
    page = parse_oai((FIXTURES / "oai_dc.xml").read_bytes())
    assert page.deleted == 1
    assert page.resumption_token is None  # an empty token ends the list
    (rec,) = page.records
    assert rec.arxiv_id == "2304.05555"
    assert rec.authors == ["Hedy Lamarr", "Katherine Johnson"]  # 'Last, First' turned round
    assert rec.doi == "10.5555/cpcs.2023"
    assert rec.published == date(2023, 4, 11) and rec.updated == date(2023, 4, 30)
    assert "Comment:" not in rec.abstract
    assert rec.code_urls == [
        "https://github.com/codesearch/cpcs",
        "https://huggingface.co/codesearch",
    ]


def test_snapshot_jsonl_and_gz_give_the_same_records(tmp_path):
    plain = _records("snapshot.jsonl")
    gz = tmp_path / "arxiv-metadata.json.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "snapshot.jsonl").read_bytes()))
    assert detect_format(gz) == "snapshot"
    assert [r.__dict__ for r in open_source(gz).records] == [r.__dict__ for r in plain]
    first, math, ltr = plain
    assert first.arxiv_id == "2301.01234" and first.published == date(2023, 1, 3)
    assert first.authors == ["Ada Lovelace", "Grace Hopper"]  # from authors_parsed
    assert math.doi == "10.4000/primes.1"  # first of several DOIs, lower-cased
    assert ltr.location == "line 4"  # the blank line 3 is skipped but counted
    assert ltr.code_urls == ["https://github.com/ltr/lm-rank"]


def test_generic_jsonl_column_synonyms():
    gnn, survey, tok = _records("generic.jsonl")
    assert gnn.title.startswith("Graph Neural Networks")
    assert gnn.abstract.startswith("We recommend citations")  # 'summary'
    assert gnn.authors == ["Marie Curie", "Pierre Curie"]  # 'creators'
    assert gnn.published == date(2022, 11, 5)  # 'published'
    assert gnn.arxiv_id == "2211.00001"  # from the 'link' URL
    assert gnn.categories == ["cs.DL", "cs.LG"]  # 'tags'
    assert survey.arxiv_id is None and survey.abs_url == "https://example.org/qe-survey"
    assert survey.authors == ["Ida Lovelace", "Bob Babbage"]
    assert survey.published == date(2021, 1, 1)  # 'year'
    assert survey.code_urls == ["https://github.com/qe/survey"]  # 'repo', slash trimmed
    assert tok.doi == "10.1000/tok.9" and tok.published == date(2020, 7, 1)


def test_generic_csv_column_synonyms():
    mlr, comp = _records("generic.csv")
    assert mlr.title == "Multilingual Retrieval, Revisited"
    assert mlr.abstract == "We revisit multilingual retrieval, with a twist."
    assert mlr.authors == ["Sofia Kovalevskaya", "Mary Somerville"]
    assert mlr.published == date(2021, 3, 15)
    assert mlr.arxiv_id == "2103.01010"
    assert mlr.code_urls == ["https://github.com/mlr/revisited"]
    assert mlr.location == "line 2"
    assert comp.doi == "10.1000/icomp.1"
    assert comp.code_urls == ["https://gitlab.com/ir/compress"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://github.com/a/b.", ["https://github.com/a/b"]),
        ("(https://github.com/a/b), and", ["https://github.com/a/b"]),
        ("at https://gitlab.com/g/sub/p.git; and", ["https://gitlab.com/g/sub/p"]),
        ("https://huggingface.co/datasets/x/y!", ["https://huggingface.co/datasets/x/y"]),
        ('"https://github.com/a/b/tree/main/src":', ["https://github.com/a/b/tree/main/src"]),
        ("http://www.github.com/a/v1.2...", ["https://www.github.com/a/v1.2"]),
        ("https://github.com/a/b and https://GitHub.com/a/b.", ["https://github.com/a/b"]),
        ("only https://github.com/ here", []),
        ("not code: https://example.org/a/b.", []),
    ],
)
def test_code_links_are_trimmed(text, expected):
    assert extract_code_urls(text) == expected


# --- storage ------------------------------------------------------------------------------

MERGE_FILES = ["merge_page.txt", "snapshot.jsonl", "oai_arxiv.xml"]


def _comparable(paper: dict) -> dict:
    """Fields that must not depend on the order sources arrived in."""
    out = dict(paper)
    for key in ("id", "first_seen"):
        out.pop(key)
    out["sources"] = sorted(out["sources"])
    return out


def test_one_paper_from_listing_snapshot_and_oai(db, tmp_path):
    """Title only + arXiv id + arXiv id and DOI: one paper, every source, any order."""
    results = {}
    for order in itertools.permutations(MERGE_FILES):
        _empty(db)
        summary = ingest_paths(db, [FIXTURES / name for name in order])
        assert not summary.failed, summary.failed
        papers = _papers(db)
        assert len(papers) == 4, order  # sparse, quantized, primes, learning-to-rank
        sparse = _by_arxiv(db, "2301.01234")
        assert sorted(sparse["sources"]) == sorted(f"file:{n}" for n in MERGE_FILES)
        assert sparse["doi"] == "10.1145/3539618.3591999"
        assert sparse["arxiv_id"] == "2301.01234"
        assert sparse["title"] == "Sparse Retrieval with Learned Term Weights"
        assert sparse["authors"] == ["Ada Lovelace", "Grace Hopper"]
        assert sparse["code_urls"][0] == "https://github.com/sparse/ltw"
        with db.session() as s:
            # found by arXiv id and by DOI, whatever id it was given first
            assert paper_store.resolve_id(s, "arXiv:2301.01234v2") == sparse["id"]
            assert paper_store.resolve_id(s, "10.1145/3539618.3591999") == sparse["id"]
            coll = coll_store.get_collection(s, "merge_page")
            assert coll.entries[0].paper_id == sparse["id"]
        results[order] = {pid: _comparable(p) for pid, p in papers.items()}
        results[order] = sorted(results[order].values(), key=lambda p: p["title"])
    first = next(iter(results.values()))
    assert all(r == first for r in results.values())


def test_reingesting_every_format_changes_nothing(db, tmp_path):
    files = sorted(p for p in FIXTURES.iterdir() if p.is_file() and p.name != "arxiv_api_error.xml")
    gz = tmp_path / "snap.jsonl.gz"
    gz.write_bytes(gzip.compress((FIXTURES / "snapshot.jsonl").read_bytes()))
    first = ingest_paths(db, [*files, gz])
    assert not first.failed, first.failed
    assert first.total("added") == 13
    before = _papers(db)
    again = ingest_paths(db, [*files, gz])
    assert not again.failed
    assert again.total("added") == 0 and again.total("updated") == 0
    assert again.total("unchanged") == sum(f.records for f in first.files)
    assert _papers(db) == before


def test_doi_match_merges_a_record_without_arxiv_id(db, tmp_path):
    ingest_paths(db, [FIXTURES / "arxiv_api.xml"])
    other = tmp_path / "library.csv"
    other.write_text(
        "title,abstract,doi\n"
        "DENSE passage retrieval for low-resource languages!,,https://doi.org/10.18653/V1/2023.ACL-LONG.42\n"
    )
    summary = ingest_paths(db, [other])
    assert (summary.total("added"), summary.total("updated")) == (0, 1)
    paper = _by_arxiv(db, "2305.04321")
    assert paper["sources"] == ["file:arxiv_api.xml", "file:library.csv"]
    assert paper["title"] == "Dense Passage Retrieval for Low-Resource Languages"
    assert len(_papers(db)) == 2


def test_code_links_stored_without_trailing_punctuation(db):
    summary = ingest_paths(db, [str(FIXTURES / "*.*")])
    assert [f.path for f in summary.failed] == [str(FIXTURES / "arxiv_api_error.xml")]
    urls = sorted(u for p in _papers(db).values() for u in p["code_urls"])
    assert urls == [
        "https://github.com/cite/gnn-rec",
        "https://github.com/codesearch/cpcs",
        "https://github.com/lowres/dpr-lr",
        "https://github.com/ltr/lm-rank",
        "https://github.com/mlr/revisited",
        "https://github.com/qe/survey",
        "https://github.com/sparse/ltw",
        "https://gitlab.com/ir/compress",
        "https://gitlab.com/sparse/ltw",
        "https://huggingface.co/codesearch",
        "https://huggingface.co/datasets/protein/ralm",
        "https://huggingface.co/lowres/dpr-lr-base",
    ]
    with db.session() as s:
        rows = s.execute(select(PaperRow.code_urls, PaperRow.has_code)).all()
    assert all(has_code == bool(urls) for urls, has_code in rows)
    assert sum(has_code for _urls, has_code in rows) == 9


def test_folder_and_glob_expansion(db, tmp_path):
    nested = tmp_path / "in" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(FIXTURES / "oai_dc.xml", nested / "a.xml")
    shutil.copy(FIXTURES / "generic.csv", tmp_path / "in" / "b.csv")
    (tmp_path / "in" / "notes.md").write_text("not a paper file")
    (tmp_path / "in" / ".hidden.jsonl").write_text("{broken")
    summary = ingest_paths(db, [tmp_path / "in", str(tmp_path / "in" / "*.csv")])
    assert [Path(f.path).name for f in summary.files] == ["b.csv", "a.xml"]
    assert not summary.failed


def test_snapshot_author_forms():
    from papersift.ingest.snapshot import snapshot_record

    obj = {
        "id": "2401.00001",
        "title": "T",
        "authors": "Fallback Name",
        "authors_parsed": [["Lovelace", "Ada", ""], ["Hopper", "Grace", "Jr"], ["Solo"], []],
    }
    assert snapshot_record(obj, "line 1").authors == ["Ada Lovelace", "Grace Hopper Jr", "Solo"]
    obj["authors_parsed"] = []
    assert snapshot_record(obj, "line 1").authors == ["Fallback Name"]


def test_oai_file_with_only_deleted_records_is_fine(db, tmp_path):
    path = tmp_path / "deleted.xml"
    path.write_text(
        '<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
        '<ListRecords><record><header status="deleted"><identifier>oai:arXiv.org:2401.1'
        "</identifier><datestamp>2024-01-02</datestamp></header></record></ListRecords>"
        "</OAI-PMH>"
    )
    summary = ingest_paths(db, [path])
    assert not summary.failed
    assert summary.total("added") == 0 and _papers(db) == {}
    empty = tmp_path / "nothing.xml"
    empty.write_text(
        '<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
        '<error code="noRecordsMatch">none</error></OAI-PMH>'
    )
    (result,) = ingest_paths(db, [empty]).files
    assert result.error == f"{empty}: no papers found in file"
