"""Ingest of the real formats, from real files (tests/fixtures/real: CC0 arXiv metadata):
the collected-listings corpus, arXiv API Atom responses, .abs files and the Kaggle-style
snapshot; the seed pages merging with their real records; bad input changing nothing."""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from papersift.ingest import ingest_paths
from papersift.ingest.formats import detect_format
from papersift.ingest.pipeline import ingest_file
from papersift.store import papers as paper_store
from papersift.store.db import Database

from .conftest import SEEDS

REAL = Path(__file__).parent / "fixtures" / "real"
SLICE = REAL / "arxiv_seed_slice.jsonl.gz"  # the 346 seed papers' records and 60 others


def _count(db: Database) -> int:
    with db.session() as s:
        return paper_store.count_papers(s)


def _seed_papers_with_real_metadata(db: Database) -> int:
    """Papers that came from both a seed page and the corpus slice."""
    with db.session() as s:
        n = 0
        for paper in paper_store.iter_papers(s):
            from_seed = any(src.startswith("file:00") for src in paper.sources)
            from_slice = "file:arxiv_seed_slice.jsonl.gz" in paper.sources
            n += from_seed and from_slice and paper.arxiv_id is not None
        return n


def test_corpus_format_is_detected_and_read_with_every_field(sqlite_db: Database) -> None:
    assert detect_format(SLICE) == "arxiv-jsonl"
    result = ingest_file(sqlite_db, SLICE)
    assert result.ok, result.error
    assert result.added == 406
    with gzip.open(SLICE, "rt") as fh:
        listed = next(json.loads(line) for line in fh if '"announced":"' in line.replace(" ", ""))
    with sqlite_db.session() as s:
        paper = paper_store.get_paper(s, listed["id"])
    assert paper is not None
    assert paper.title == " ".join(listed["title"].split())
    assert paper.authors == listed["authors"] and paper.authors
    assert paper.announced == date.fromisoformat(listed["announced"])
    assert paper.primary_category == listed["primary_category"]
    assert paper.categories == listed["categories"]
    assert paper.comment == (listed["comment"] or None)
    assert paper.abs_url == f"https://arxiv.org/abs/{listed['id']}"


@pytest.mark.parametrize("seeds_first", [False, True])
def test_seed_pages_merge_with_their_346_real_records(db: Database, seeds_first: bool) -> None:
    """Whichever comes first, the 346 seed papers the corpus has become one paper each,
    with the corpus's id, authors and dates, and their seed collections still list them."""
    order = [SEEDS, SLICE] if seeds_first else [SLICE, SEEDS]
    summary = ingest_paths(db, order)
    assert not summary.failed, [f.error for f in summary.failed]
    assert _seed_papers_with_real_metadata(db) == 346
    with db.session() as s:
        dated = s.execute(
            text("SELECT count(*) FROM papers WHERE arxiv_id IS NOT NULL AND published IS NULL")
        ).scalar()
        assert dated == 0
    again = ingest_paths(db, order)  # idempotent: nothing changes twice
    assert again.added == 0 and again.updated == 0


def test_real_atom_responses(sqlite_db: Database) -> None:
    result = ingest_file(sqlite_db, REAL / "atom" / "id_1605.08386_s0_m100_199195aa31ad.xml")
    assert result.ok and result.added == 1
    with sqlite_db.session() as s:
        paper = paper_store.get_paper(s, "1605.08386")
    assert paper is not None and paper.authors and paper.published
    assert paper.primary_category == "math.CO"
    assert paper.comment == "20 pages, 3 figures"
    ten = ingest_file(sqlite_db, REAL / "atom" / "q_testing_s0_m10_bc5a6c384fe9.xml")
    assert ten.ok and ten.added == 10
    error = ingest_file(sqlite_db, REAL / "atom" / "id_abc_s0_m100_b79c8dcf6bc3.xml")
    assert not error.ok and "arXiv API error" in (error.error or "")
    empty = ingest_file(sqlite_db, REAL / "atom" / "id_0000.0000_s0_m100_8b51d9633a68.xml")
    assert not empty.ok and "no papers" in (empty.error or "")
    assert _count(sqlite_db) == 11


def test_real_abs_files(sqlite_db: Database) -> None:
    folder = REAL / "abs"
    assert detect_format(folder / "acc-phys_9411_9411001.abs") == "abs"
    summary = ingest_paths(sqlite_db, [folder])
    by_name = {Path(f.path).name: f for f in summary.files}
    assert not by_name["math-ph_0509_0509037.abs"].ok  # an empty file
    assert "empty file" in (by_name["math-ph_0509_0509037.abs"].error or "")
    with sqlite_db.session() as s:
        old = paper_store.get_paper(s, "acc-phys/9411001")
        affiliated = paper_store.get_paper(s, "adap-org/9509003")
        revised = paper_store.get_paper(s, "0704.0492")
    assert old is not None
    assert old.title == "Symplectic Computation of Lyapunov Exponents"
    assert old.authors == ["Salman Habib", "Robert D. Ryne"]
    assert old.published == date(1994, 11, 1)
    assert old.categories == ["acc-phys", "physics.acc-ph"]
    assert old.primary_category == "acc-phys"
    assert old.comment == "12 pages, uuencoded PostScript (figures included)"
    assert old.abstract.startswith("A recently developed method")
    assert affiliated is not None and affiliated.authors == ["Yu Shi"]
    assert affiliated.title.startswith("Self-organization, ergodicity breaking, phase transition")
    assert revised is not None and revised.updated == date(2010, 2, 4)
    assert revised.authors == ["Shenghui Su", "Shuwang Lu"]


def test_real_kaggle_snapshot_lines(sqlite_db: Database) -> None:
    path = REAL / "kaggle_snapshot_sample.jsonl"
    assert detect_format(path) == "snapshot"
    result = ingest_file(sqlite_db, path)
    assert result.ok and result.added == 60
    with sqlite_db.session() as s:
        first = paper_store.get_paper(s, "0704.0001")
    assert first is not None
    assert first.comment == "37 pages, 15 figures; published version"
    assert first.primary_category == "hep-ph"
    assert first.doi == "10.1103/physrevd.76.013009"


# -- bad input: a clear error and nothing written ---------------------------------------


def _slice_lines() -> list[str]:
    with gzip.open(SLICE, "rt", encoding="utf-8") as fh:
        return fh.readlines()


def _write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path


def test_corrupt_line_in_corpus_writes_nothing(sqlite_db: Database, tmp_path: Path) -> None:
    lines = _slice_lines()
    lines[200] = lines[200][: len(lines[200]) // 2] + "\n"
    result = ingest_file(sqlite_db, _write_gz(tmp_path / "corpus.jsonl.gz", lines))
    assert not result.ok and "line 201" in (result.error or "")
    assert "broken JSON" in (result.error or "")
    assert _count(sqlite_db) == 0


def test_truncated_gzip_writes_nothing(sqlite_db: Database, tmp_path: Path) -> None:
    whole = _write_gz(tmp_path / "whole.jsonl.gz", _slice_lines()).read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    result = ingest_file(sqlite_db, cut)
    assert not result.ok and "cannot read file" in (result.error or "")
    assert _count(sqlite_db) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("comment", "x" * 10_001, "comment is 10,001 characters"),
        ("primary_category", "c" * 65, "primary category is 65 characters"),
        ("abstract", "a" * 100_001, "abstract is 100,001 characters"),
        ("authors", {"not": "a list"}, "authors are neither"),
        ("announced", "2026-02-30", "impossible announced date"),
        ("id", "not-an-id", "not an arXiv id"),
    ],
)
def test_oversized_or_wrong_field_writes_nothing(
    sqlite_db: Database, tmp_path: Path, field: str, value: object, message: str
) -> None:
    lines = _slice_lines()
    record = json.loads(lines[10])
    record[field] = value
    lines[10] = json.dumps(record) + "\n"
    result = ingest_file(sqlite_db, _write_gz(tmp_path / "big.jsonl.gz", lines))
    assert not result.ok
    assert "line 11" in (result.error or "") and message in (result.error or ""), result.error
    assert _count(sqlite_db) == 0


def test_abs_file_without_id_or_separators(sqlite_db: Database, tmp_path: Path) -> None:
    good = (REAL / "abs" / "acc-phys_9411_9411001.abs").read_text()
    no_id = tmp_path / "noid.abs"
    no_id.write_text(good.replace("arXiv:acc-phys/9411001", "Something else"))
    cut = tmp_path / "cut.abs"
    cut.write_text(good.split("Title:")[0])
    for path, message in ((no_id, "without an arXiv: id"), (cut, "not an arXiv .abs file")):
        result = ingest_file(sqlite_db, path)
        assert not result.ok and message in (result.error or ""), result.error
    shutil.copy(REAL / "abs" / "acc-phys_9411_9411001.abs", tmp_path / "ok.abs")
    assert ingest_file(sqlite_db, tmp_path / "ok.abs").ok
    assert _count(sqlite_db) == 1
