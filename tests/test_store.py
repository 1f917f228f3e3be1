"""Paper and collection repositories on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

from papersift.ingest.merge import new_row
from papersift.ingest.records import PaperRecord
from papersift.store import collections as coll_store
from papersift.store import papers as paper_store

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _row(i: int, **kw) -> dict:
    record = PaperRecord(
        title=kw.pop("title", f"Paper number {i}"),
        abstract=f"Abstract {i}.",
        arxiv_id=kw.pop("arxiv_id", f"2401.{i:05d}"),
        doi=kw.pop("doi", None),
        published=date(2024, 1, 1),
        authors=["Ada Lovelace"],
        categories=["cs.IR"],
    ).finalize()
    return new_row(record, record.arxiv_id or f"p{i}", "test", NOW)


def _insert(db, rows: list[dict]) -> None:
    with db.session() as s:
        paper_store.insert_rows(s, rows)


def test_resolve_id_by_id_arxiv_forms_and_doi(db):
    _insert(db, [_row(1, doi="10.1000/ABC"), _row(2, arxiv_id=None, title="No id")])
    with db.session() as s:
        for ref in ("2401.00001", "arXiv:2401.00001v3", "https://arxiv.org/abs/2401.00001v1"):
            assert paper_store.resolve_id(s, ref) == "2401.00001", ref
        assert paper_store.resolve_id(s, "10.1000/abc") == "2401.00001"
        assert paper_store.resolve_id(s, "p2") == "p2"
        assert paper_store.resolve_id(s, "  ") is None
        assert paper_store.resolve_id(s, "2401.99999") is None
        paper = paper_store.get_paper(s, "2401.00001v2")
    assert paper.title == "Paper number 1" and paper.authors == ["Ada Lovelace"]
    assert paper.published == date(2024, 1, 1) and paper.categories == ["cs.IR"]


def test_bulk_reads_cross_the_chunk_size(db):
    rows = [_row(i) for i in range(1, 1203)]  # more than two IN-chunks of 500
    _insert(db, rows)
    ids = [r["id"] for r in rows]
    with db.session() as s:
        assert paper_store.count_papers(s) == 1202
        got = paper_store.get_papers(s, [*ids, "missing"])
        assert set(got) == set(ids)
        # the Core read for lists gives exactly what the ORM read of one paper gives
        assert all(got[i] == paper_store.get_paper(s, i) for i in ids[:3])
        assert paper_store.existing_ids(s, [*ids[:700], "nope"]) == set(ids[:700])
        walked = [p.id for p in paper_store.iter_papers(s, batch=250)]
        matches = paper_store.find_matches(
            s, ids[:600], [], [r["title_key"] for r in rows[590:610]]
        )
    assert walked == sorted(ids)
    assert len(matches) == 610


def test_update_rows_by_primary_key(db):
    rows = [_row(1), _row(2)]
    _insert(db, rows)
    changed = dict(rows[1], abstract="New abstract.", code_urls=["https://github.com/a/b"])
    with db.session() as s:
        paper_store.update_rows(s, [changed])
    with db.session() as s:
        papers = paper_store.get_papers(s, ["2401.00001", "2401.00002"])
    assert papers["2401.00002"].abstract == "New abstract."
    assert papers["2401.00002"].code_url == "https://github.com/a/b"
    assert papers["2401.00001"].abstract == "Abstract 1."


def test_upsert_collection_states_and_order(db):
    _insert(db, [_row(i) for i in range(1, 5)])
    ids = [f"2401.0000{i}" for i in (3, 1, 2)]
    with db.session() as s:
        assert coll_store.upsert_collection(s, "page", "page.txt", ids) == "added"
        assert coll_store.upsert_collection(s, "empty", "nothing.txt", []) == "added"
    with db.session() as s:
        assert coll_store.upsert_collection(s, "page", "page.txt", ids) == "unchanged"
    with db.session() as s:
        new = ["2401.00004", *ids]
        assert coll_store.upsert_collection(s, "page", "page.txt", new) == "updated"
    with db.session() as s:
        coll = coll_store.get_collection(s, "page")
        assert [(e.rank, e.paper_id) for e in coll.entries] == list(enumerate(new, start=1))
        assert coll_store.collection_sizes(s) == [
            ("empty", "nothing.txt", 0),
            ("page", "page.txt", 4),
        ]
        assert coll_store.collections_of_paper(s, "2401.00001") == [("page", 3)]
        assert coll_store.paper_ids_in_collections(s, ["page", "empty"]) == set(new)
        assert coll_store.get_collection(s, "nope") is None


def test_bulk_insert_stores_what_sqlalchemy_would(db):
    """The fast INSERT path writes the same JSON text and reads back the same values."""
    import json

    from sqlalchemy import text

    from papersift.store.schema import PaperRow

    fast = _row(1)
    fast["authors"] = ['Ünïcode "Quoted" Name', "Back\\slash"]
    orm = dict(_row(2), authors=list(fast["authors"]))
    _insert(db, [fast])
    with db.session() as s:
        s.add(PaperRow(**orm))  # the ordinary ORM path, for comparison
    with db.engine.connect() as conn:
        raw = dict(conn.execute(text("SELECT id, CAST(authors AS TEXT) FROM papers")).all())
    assert raw["2401.00001"] == raw["2401.00002"] == json.dumps(fast["authors"])
    with db.session() as s:
        a, b = (paper_store.get_paper(s, pid).to_dict() for pid in ("2401.00001", "2401.00002"))
    for key in ("id", "arxiv_id", "abs_url", "pdf_url", "title", "abstract"):
        a.pop(key), b.pop(key)
    assert a == b


def test_papers_table_holds_the_paper_fields_and_only_derived_extras():
    from papersift.model import PAPER_FIELDS

    assert set(paper_store.PAPER_COLUMNS) == {*PAPER_FIELDS, *paper_store.DERIVED_COLUMNS}
    assert len(paper_store.PAPER_COLUMNS) == len(PAPER_FIELDS) + len(paper_store.DERIVED_COLUMNS)


def test_timestamps_are_stored_in_utc_and_read_back_aware(db):
    """Naive means UTC; another zone is converted; reads are aware UTC on both databases."""
    from datetime import timedelta, timezone

    from sqlalchemy import select

    from papersift.store.schema import PaperRow

    plus_two = datetime(2024, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2024, 6, 1, 12, 0)
    _insert(db, [dict(_row(1), first_seen=plus_two), dict(_row(2), first_seen=naive)])
    with db.session() as s:
        s.add(PaperRow(**dict(_row(3), first_seen=plus_two)))  # the ORM path too
    with db.session() as s:
        papers = paper_store.get_papers(s, ["2401.00001", "2401.00002", "2401.00003"])
        orm = s.get(PaperRow, "2401.00001")
        assert orm is not None and orm.first_seen.tzinfo is not None
        # a bound aware value compares in UTC: 12:00 UTC is the same instant as 14:00+02
        same = s.scalars(select(PaperRow.id).where(PaperRow.first_seen == plus_two)).all()
    assert sorted(same) == ["2401.00001", "2401.00002", "2401.00003"]
    for paper in papers.values():
        assert paper.first_seen == NOW
        assert paper.first_seen.utcoffset() == timedelta(0)
    assert papers["2401.00001"].to_dict()["first_seen"] == "2024-06-01T12:00:00+00:00"


def test_sqlite_connections_keep_a_page_cache_big_enough_for_lookups_by_id(tmp_path):
    """Every SQLite connection gets the 32 MB page cache (db.READ_CACHE_KIB): with SQLite's
    2 MB, reading ten papers by id at a million papers took ten times longer."""
    from sqlalchemy import text

    from papersift.store.db import READ_CACHE_KIB, Database

    database = Database(f"sqlite:///{tmp_path / 'cache.db'}")
    try:
        with database.session() as s:
            assert s.execute(text("PRAGMA cache_size")).scalar() == -READ_CACHE_KIB
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        database.dispose()
