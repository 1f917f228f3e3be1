"""The library store on real SQLite and PostgreSQL: tags, saved papers, notes, saved
searches, import reports; one reader never sees another's rows; deleting a user deletes
their library (by the cascade and by the explicit deleter)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select

from papersift.model import normalize_title
from papersift.store import library as lib
from papersift.store.db import Database
from papersift.store.schema import PaperRow
from papersift.store.schema_accounts import UserRow

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _user(db: Database, email: str) -> int:
    with db.session() as s:
        row = UserRow(email=email, name="", is_admin=False, created_at=T0)
        s.add(row)
        s.flush()
        return row.id


def _papers(db: Database, *ids: str) -> None:
    with db.session() as s:
        for pid in ids:
            title = f"Paper {pid}"
            s.add(
                PaperRow(
                    id=pid,
                    title=title,
                    title_key=normalize_title(title),
                    abstract="",
                    authors=[],
                    categories=[],
                    code_urls=[],
                    sources=["test"],
                    first_seen=T0,
                    modified_at=T0,
                    content_hash="0" * 40,
                )
            )


def test_tags_and_saved_papers(db: Database) -> None:
    alice, bob = _user(db, "alice@example.org"), _user(db, "bob@example.org")
    _papers(db, "p1", "p2", "p3")
    with db.session() as s:
        assert lib.add(s, alice, "p1", at=T0)
        assert not lib.add(s, alice, "p1", at=T0)  # already there: one row
        assert lib.add(s, alice, "p2", "RL", at=T0 + timedelta(hours=1))
        assert lib.add(s, alice, "p1", "RL", at=T0 + timedelta(hours=2))
        assert lib.add(s, bob, "p3", "RL", at=T0)
    with db.session() as s:
        names = [t.name for t in lib.tags(s, alice)]
        assert names == ["RL", "Saved"]
        rl = lib.tag_by_name(s, alice, "RL")
        assert rl is not None and lib.tag_by_id(s, bob, rl.id) is None
        assert lib.saved_ids(s, alice, rl.id) == ["p1", "p2"]  # newest first
        assert lib.saved_ids(s, alice) == ["p2", "p1"]  # p1 first saved at T0
        assert lib.saved_ids(s, bob) == ["p3"]
        assert lib.tags_of(s, alice, ["p1", "p2", "p3"]) == {"p1": ["RL", "Saved"], "p2": ["RL"]}
        assert lib.tag_counts(s, alice) == {rl.id: 2, lib.tag_by_name(s, alice, "Saved").id: 1}
        assert lib.remove(s, alice, "p1", rl.id) == 1
        assert lib.remove(s, alice, "p3") == 0  # bob's paper is not alice's to remove
    with db.session() as s:
        assert lib.saved_ids(s, alice, rl.id) == ["p2"]
        assert lib.saved_ids(s, bob) == ["p3"]
        assert lib.remove(s, alice, "p1") == 1
        assert lib.delete_tag(s, alice, rl.id)
        assert not lib.delete_tag(s, bob, lib.tag_by_name(s, alice, "Saved").id)
    with db.session() as s:
        assert lib.saved_ids(s, alice) == []
        assert [t.name for t in lib.tags(s, alice)] == ["Saved"]


def test_bulk_add_is_idempotent(db: Database) -> None:
    alice = _user(db, "alice@example.org")
    ids = [f"p{i}" for i in range(1200)]  # more than one chunk of bound parameters
    _papers(db, *ids)
    with db.session() as s:
        tag = lib.ensure_tag(s, alice, "Imported")
        assert lib.add_to_tag(s, alice, tag.id, ids + ids[:5]) == 1200
        assert lib.add_to_tag(s, alice, tag.id, ids[:10]) == 0
    with db.session() as s:
        assert len(lib.saved_ids(s, alice, tag.id)) == 1200
        assert len(lib.tags_of(s, alice, ids)) == 1200


def test_notes(db: Database) -> None:
    alice, bob = _user(db, "alice@example.org"), _user(db, "bob@example.org")
    _papers(db, "p1")
    with db.session() as s:
        lib.set_note(s, alice, "p1", "read section 3", at=T0)
        lib.set_note(s, bob, "p1", "bob's own", at=T0)
    with db.session() as s:
        lib.set_note(s, alice, "p1", "read section 4", at=T0 + timedelta(days=1))
    with db.session() as s:
        row = lib.note(s, alice, "p1")
        assert row is not None and row.text == "read section 4"
        assert row.updated_at == T0 + timedelta(days=1)
        assert lib.notes(s, bob) == {"p1": "bob's own"}
        lib.set_note(s, alice, "p1", "")
    with db.session() as s:
        assert lib.note(s, alice, "p1") is None
        assert lib.notes(s, bob, ["p1", "zz"]) == {"p1": "bob's own"}


def test_saved_searches(db: Database) -> None:
    alice, bob = _user(db, "alice@example.org"), _user(db, "bob@example.org")
    with db.session() as s:
        first = lib.add_saved_search(
            s, alice, "diffusion", "video diffusion", {"mode": "hybrid", "has_code": True}, at=T0
        )
        lib.add_saved_search(s, alice, "rl", "offline rl", {}, in_digest=True, at=T0)
        sid = first.id
    with db.session() as s:
        rows = lib.saved_searches(s, alice)
        assert [r.name for r in rows] == ["diffusion", "rl"]
        assert rows[0].filters == {"mode": "hybrid", "has_code": True}
        assert [r.name for r in lib.digest_searches(s, alice)] == ["rl"]
        assert lib.saved_search(s, bob, sid) is None
        assert not lib.update_saved_search(s, bob, sid, in_digest=True)
        assert lib.update_saved_search(s, alice, sid, in_digest=True, name="video")
        lib.touch_saved_search(s, sid, T0 + timedelta(days=2))
    with db.session() as s:
        row = lib.saved_search(s, alice, sid)
        assert row is not None and row.in_digest and row.name == "video"
        assert row.last_seen_at == T0 + timedelta(days=2)
        assert not lib.delete_saved_search(s, bob, sid)
        assert lib.delete_saved_search(s, alice, sid)
    with db.session() as s:
        assert [r.name for r in lib.saved_searches(s, alice)] == ["rl"]


def test_import_reports_and_export(db: Database) -> None:
    alice = _user(db, "alice@example.org")
    _papers(db, "p1")
    report = [
        {"n": 1, "title": "A", "status": "matched", "paper_id": "p1", "reason": "arXiv id"},
        {"n": 2, "title": "B", "status": "failed", "paper_id": None, "reason": "no title"},
    ]
    with db.session() as s:
        tag = lib.ensure_tag(s, alice, "Zotero")
        lib.add_to_tag(s, alice, tag.id, ["p1"], at=T0)
        lib.set_note(s, alice, "p1", "note", at=T0)
        row = lib.record_import(
            s, alice, tag_id=tag.id, filename="z.bib", format="bibtex", report=report, at=T0
        )
        import_id = row.id
    with db.session() as s:
        got = lib.import_report(s, alice, import_id)
        assert got is not None and (got.matched, got.added, got.failed) == (1, 0, 1)
        assert got.report == report
        data = lib.export_library(s, alice)
    assert data["tags"][0]["name"] == "Zotero"
    assert data["tags"][0]["papers"][0]["paper_id"] == "p1"
    assert data["notes"][0]["text"] == "note"
    assert data["imports"][0]["filename"] == "z.bib"


@pytest.mark.parametrize("how", ["cascade", "explicit"])
def test_deleting_a_user_deletes_their_library(db: Database, how: str) -> None:
    alice, bob = _user(db, "alice@example.org"), _user(db, "bob@example.org")
    _papers(db, "p1")
    with db.session() as s:
        for uid in (alice, bob):
            lib.add(s, uid, "p1", "T")
            lib.set_note(s, uid, "p1", "n")
            lib.add_saved_search(s, uid, "q", "q", {})
            lib.record_import(s, uid, tag_id=None, filename="", format="ris", report=[])
    with db.session() as s:
        if how == "explicit":
            lib.delete_user_library(s, alice)
        s.execute(delete(UserRow).where(UserRow.id == alice))
    with db.session() as s:
        for table in (
            lib.TagRow,
            lib.LibraryEntryRow,
            lib.PaperNoteRow,
            lib.SavedSearchRow,
            lib.LibraryImportRow,
        ):
            owners = set(s.scalars(select(table.user_id)))  # type: ignore[attr-defined]
            assert owners == {bob}, table
        assert s.scalar(select(func.count()).select_from(PaperRow)) == 1


def test_deleting_a_paper_removes_it_from_libraries(db: Database) -> None:
    alice = _user(db, "alice@example.org")
    _papers(db, "p1", "p2")
    with db.session() as s:
        lib.add(s, alice, "p1")
        lib.add(s, alice, "p2")
        lib.set_note(s, alice, "p1", "n")
    with db.session() as s:
        s.execute(delete(PaperRow).where(PaperRow.id == "p1"))
    with db.session() as s:
        assert lib.saved_ids(s, alice) == ["p2"]
        assert lib.notes(s, alice) == {}
