"""Bad input never half-writes: a clear error naming file and line, and the database intact.

Every case runs through the pipeline and through the real CLI, on SQLite and PostgreSQL.
"Intact" is checked on a full dump of every table, taken before and after.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from papersift.cli import app
from papersift.ingest import ingest_paths
from papersift.ingest.pipeline import ingest_file
from papersift.store.db import Database
from papersift.store.schema import Base

FIXTURES = Path(__file__).parent / "fixtures"
GOOD_LINE = json.dumps({"title": "A Unique Good Paper", "abstract": "Fine and valid."})


def dump(db: Database) -> dict[str, list[tuple]]:
    """Every row of every table, in primary-key order: equal dumps mean an untouched db."""
    out: dict[str, list[tuple]] = {}
    with db.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            rows = conn.execute(select(table).order_by(*order)).all()
            out[table.name] = [tuple(r) for r in rows]
    return out


def _seed(db: Database) -> None:
    """Some existing content, so 'unchanged' is a real claim."""
    summary = ingest_paths(db, [FIXTURES / "merge_page.txt", FIXTURES / "snapshot.jsonl"])
    assert not summary.failed


def _write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _truncated_xml() -> bytes:
    data = (FIXTURES / "oai_arxiv.xml").read_bytes()
    return data[: data.index(b"<title>Quantized")]


def _listing_unpaired() -> str:
    page = (FIXTURES / "merge_page.txt").read_text()
    return page + "A Lonely Title Without Its Abstract\n"


def _update_then_broken() -> str:
    # line 1 would update an existing paper (newer version), line 3 is broken JSON
    newer = {
        "id": "2301.01234",
        "title": "Sparse Retrieval with Learned Term Weights",
        "abstract": "A CHANGED ABSTRACT that must never be stored.",
        "authors_parsed": [["Lovelace", "Ada", ""]],
        "versions": [{"version": "v3", "created": "Mon, 1 Jan 2024 00:00:00 GMT"}],
        "update_date": "2024-01-01",
    }
    fresh = dict(newer, id="2402.00002", title="A Unique Good Paper")
    return json.dumps(newer) + "\n" + json.dumps(fresh) + '\n{"title": "Broken", "abstract": \n'


# name -> (file name, content, text the error must contain, location it must name)
CASES: dict[str, tuple[str, str | bytes, str, str]] = {
    "empty": ("empty.jsonl", b"", "empty file", ""),
    "blank": ("blank.txt", "\n  \n\n", "empty file", ""),
    "binary": (
        "figure.txt",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "binary",
        "",
    ),
    "truncated_xml": ("cut.xml", _truncated_xml(), "broken XML", "line 3"),
    "listing_unpaired": ("page.txt", _listing_unpaired(), "has no abstract", "line 7"),
    "jsonl_broken_line": (
        "papers.jsonl",
        GOOD_LINE
        + '\n{"title": "x", "abstract": "y"\n'
        + GOOD_LINE.replace("Good", "Other")
        + "\n",
        "broken JSON",
        "line 2",
    ),
    "jsonl_update_then_broken": ("snap.jsonl", _update_then_broken(), "broken JSON", "line 3"),
    "impossible_date_jsonl": (
        "dates.jsonl",
        GOOD_LINE + "\n" + json.dumps({"title": "T", "abstract": "A", "date": "2023-02-30"}),
        "impossible date '2023-02-30'",
        "line 2",
    ),
    "impossible_date_csv": (
        "dates.csv",
        "title,abstract,published\nOk,Fine,2023-02-27\nBad,Date,2023-02-30\n",
        "impossible date '2023-02-30'",
        "line 3",
    ),
    "impossible_date_snapshot": (
        "snapshot.json",
        json.dumps(
            {
                "id": "2401.00001",
                "title": "T",
                "abstract": "A",
                "authors_parsed": [],
                "versions": [],
                "update_date": "2023-02-30",
            }
        ),
        "impossible update_date",
        "line 1",
    ),
    "huge_title_jsonl": (
        "huge.jsonl",
        GOOD_LINE + "\n" + json.dumps({"title": "T" * 1_000_000, "abstract": "A"}) + "\n",
        "title is 1,000,000 characters",
        "line 2",
    ),
    "huge_title_listing": (
        "huge.txt",
        "Some Title\nAn abstract that is long enough to be one.\n" + "W" * 1_000_000 + "\nabs\n",
        "1,000,000 characters",
        "line 3",
    ),
    "wrong_types_jsonl": (
        "types.jsonl",
        GOOD_LINE + "\n" + json.dumps({"title": "T", "abstract": "A", "categories": 5}) + "\n",
        "unusable record",
        "line 2",
    ),
    "no_title_csv": ("notitle.csv", "name2,abstract\nx,y\n", "no title column", "line 1"),
    "oai_error": (
        "error.xml",
        '<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">'
        '<error code="badArgument">Illegal argument</error></OAI-PMH>',
        "OAI-PMH error badArgument",
        "",
    ),
    "atom_error_entry": (
        "api.xml",
        (FIXTURES / "arxiv_api_error.xml").read_bytes(),
        "arXiv API error",
        "line 10",
    ),
    "corrupt_gz": ("data.jsonl.gz", b"\x1f\x8b\x08\x00garbage-not-deflate", "cannot read", ""),
    "truncated_gz": (
        "cut.jsonl.gz",
        gzip.compress(((GOOD_LINE + "\n") * 20_000).encode(), mtime=0)[:3000],
        "cannot read",
        "",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_changes_nothing_through_the_pipeline(db, tmp_path, case):
    name, content, message, location = CASES[case]
    bad = _write(tmp_path / name, content)
    _seed(db)
    before = dump(db)
    summary = ingest_paths(db, [bad])
    assert dump(db) == before
    (result,) = summary.files
    assert not result.ok
    assert str(bad) in result.error
    assert message in result.error
    if location:
        assert location in result.error
    assert (result.added, result.updated, result.unchanged, result.changed_ids) == (0, 0, 0, [])


def test_missing_file_and_empty_glob_are_reported(db, tmp_path):
    _seed(db)
    before = dump(db)
    summary = ingest_paths(db, [tmp_path / "nope.jsonl", str(tmp_path / "*.nothing")])
    assert dump(db) == before
    errors = [f.error for f in summary.failed]
    assert errors == [
        f"{tmp_path / 'nope.jsonl'}: no such file or folder",
        f"{tmp_path / '*.nothing'}: no file matches this pattern",
    ]
    assert [f.path for f in summary.failed] == [
        str(tmp_path / "nope.jsonl"),
        str(tmp_path / "*.nothing"),
    ]


def _invoke(db: Database, *args: str):
    return CliRunner().invoke(app, ["--db", db.url, *args], catch_exceptions=False)


def test_cli_reports_every_bad_file_and_still_ingests_good_ones(db, tmp_path, home):
    _seed(db)
    bad = {case: _write(tmp_path / f"{case}_{n}", c) for case, (n, c, _m, _l) in CASES.items()}
    good = FIXTURES / "oai_arxivraw.xml"
    missing = tmp_path / "missing.csv"
    args = [str(p) for p in bad.values()] + [str(good), str(missing), str(tmp_path / "*.none")]
    result = _invoke(db, "ingest", "--quiet", *args)
    assert result.exit_code == 1
    err_lines = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(err_lines) == len(CASES) + 2
    for case, path in bad.items():
        _n, _c, message, location = CASES[case]
        (line,) = [x for x in err_lines if f"{path}:" in x or f"{path}," in x]
        assert message in line and location in line
    assert any(str(missing) in x and "no such file" in x for x in err_lines)
    assert any("*.none" in x and "no file matches" in x for x in err_lines)
    assert "1 ok, 20 failed" in result.stdout
    with db.engine.connect() as conn:
        titles = set(conn.scalars(text("SELECT title FROM papers")))
    assert "Retrieval-Augmented Protein Language Models" in titles  # the good file went in
    assert not titles & {"A Unique Good Paper", "A Unique Other Paper", "Some Title", "Ok"}


def test_cli_json_summary_names_failures(db, tmp_path, home):
    bad = _write(tmp_path / "broken.jsonl", GOOD_LINE + "\n{oops\n")
    before = dump(db)
    result = _invoke(db, "ingest", "--json", str(bad))
    assert result.exit_code == 1
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["failed"] == 1 and data["added"] == 0
    assert data["files"][0]["error"].startswith(f"{bad}, line 2: broken JSON")
    assert dump(db) == before


@pytest.mark.parametrize("case", ["empty", "binary", "truncated_xml", "impossible_date_jsonl"])
def test_cli_single_bad_file_exits_non_zero_and_changes_nothing(db, tmp_path, home, case):
    name, content, message, location = CASES[case]
    bad = _write(tmp_path / name, content)
    _seed(db)
    before = dump(db)
    result = _invoke(db, "ingest", "--quiet", str(bad))
    assert result.exit_code == 1
    assert str(bad) in result.stderr and message in result.stderr and location in result.stderr
    assert "0 ok, 1 failed" in result.stdout
    assert dump(db) == before


def test_cli_nothing_to_ingest_is_an_error(db, tmp_path, home):
    result = _invoke(db, "ingest", str(tmp_path / "*.jsonl"))
    assert result.exit_code == 1
    assert "no file matches this pattern" in result.stderr


def test_database_error_mid_file_rolls_the_whole_file_back(db, tmp_path):
    """A real constraint violation (a unique index on title_key) after earlier batches."""
    _seed(db)
    lines = [
        json.dumps({"title": f"Fresh Paper Number {i}", "abstract": f"Abstract {i}."})
        for i in range(35)
    ]
    # same title as a stored paper but another arXiv id: a different paper, so it is
    # inserted, and the extra unique index refuses it
    clash = {"id": "2401.99999", "title": "Sparse Retrieval with Learned Term Weights"}
    lines.append(json.dumps(clash))
    path = _write(tmp_path / "clash.jsonl", "\n".join(lines) + "\n")
    with db.engine.begin() as conn:
        conn.execute(text("CREATE UNIQUE INDEX test_only_unique_title ON papers (title_key)"))
    try:
        before = dump(db)
        result = ingest_file(db, path, batch_size=10)  # three batches are written first
        assert dump(db) == before
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP INDEX test_only_unique_title"))
    assert not result.ok
    assert result.error.startswith(f"{path}: database error, file not ingested")
    assert "unique" in result.error.lower()
    assert result.added == 0 and result.changed_ids == []
    # and without the extra index the same file goes in whole
    again = ingest_file(db, path, batch_size=10)
    assert again.ok and again.added == 36
