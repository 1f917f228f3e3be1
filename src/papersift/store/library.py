"""Readers' libraries: tags, saved papers, notes, saved searches and import reports.

Every function takes the owner's ``user_id`` and reads or writes only that user's rows, so
a caller cannot reach another reader's library by guessing an id. Names are checked by the
service (:mod:`papersift.library`); the store only stores them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from papersift.store.schema_library import (
    DEFAULT_TAG,
    LibraryEntryRow,
    LibraryImportRow,
    PaperNoteRow,
    SavedSearchRow,
    TagRow,
)

_IN_CHUNK = 500

__all__ = [
    "DEFAULT_TAG",
    "LibraryEntryRow",
    "LibraryImportRow",
    "PaperNoteRow",
    "SavedSearchRow",
    "TagRow",
]


def _now() -> datetime:
    return datetime.now(UTC)


def _insert_ignore(session: Session, table: Any, rows: list[dict[str, Any]]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING: a double click or two tabs racing keep one row
    and neither fails. How many rows were new (counted by RETURNING: psycopg's rowcount
    is not reliable for a multi-row insert that skips conflicts)."""
    if not rows:
        return 0
    core = table.__table__
    first = next(iter(core.primary_key.columns))
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg = pg_insert(core).values(rows).on_conflict_do_nothing()
        return len(session.execute(pg.returning(first)).all())
    lite = sqlite_insert(core).values(rows).on_conflict_do_nothing()
    return len(session.execute(lite.returning(first)).all())


def _rowcount(result: Any) -> int:
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


# -- tags --------------------------------------------------------------------------------


def tags(session: Session, user_id: int) -> list[TagRow]:
    """The user's tags by name (case-insensitive)."""
    stmt = select(TagRow).where(TagRow.user_id == user_id).order_by(func.lower(TagRow.name))
    return list(session.scalars(stmt))


def tag_counts(session: Session, user_id: int) -> dict[int, int]:
    """Papers per tag id (tags with none are absent)."""
    stmt = (
        select(LibraryEntryRow.tag_id, func.count())
        .where(LibraryEntryRow.user_id == user_id)
        .group_by(LibraryEntryRow.tag_id)
    )
    return {tag_id: int(n) for tag_id, n in session.execute(stmt)}


def tag_by_name(session: Session, user_id: int, name: str) -> TagRow | None:
    stmt = select(TagRow).where(TagRow.user_id == user_id, TagRow.name == name)
    return session.scalar(stmt)


def tag_by_id(session: Session, user_id: int, tag_id: int) -> TagRow | None:
    row = session.get(TagRow, tag_id)
    return row if row is not None and row.user_id == user_id else None


def ensure_tag(session: Session, user_id: int, name: str, at: datetime | None = None) -> TagRow:
    """The user's tag called ``name``, created if there is none (race-safe)."""
    row = tag_by_name(session, user_id, name)
    if row is not None:
        return row
    _insert_ignore(
        session, TagRow, [{"user_id": user_id, "name": name, "created_at": at or _now()}]
    )
    row = tag_by_name(session, user_id, name)
    assert row is not None  # inserted now or by whoever raced us
    return row


def rename_tag(session: Session, user_id: int, tag_id: int, name: str) -> bool:
    """False if the tag is not the user's (a clash with another tag's name raises the
    database's IntegrityError: the service checks first)."""
    result = session.execute(
        update(TagRow).where(TagRow.id == tag_id, TagRow.user_id == user_id).values(name=name)
    )
    return _rowcount(result) > 0


def delete_tag(session: Session, user_id: int, tag_id: int) -> bool:
    """Delete a tag and its entries (the papers stay in the user's other tags)."""
    session.execute(
        delete(LibraryEntryRow).where(
            LibraryEntryRow.tag_id == tag_id, LibraryEntryRow.user_id == user_id
        )
    )
    result = session.execute(delete(TagRow).where(TagRow.id == tag_id, TagRow.user_id == user_id))
    return _rowcount(result) > 0


# -- saved papers ------------------------------------------------------------------------


def add(
    session: Session,
    user_id: int,
    paper_id: str,
    tag_name: str = DEFAULT_TAG,
    at: datetime | None = None,
) -> bool:
    """Save a paper into the user's tag (created if new); False if it was there already.
    The paper must exist (foreign key)."""
    tag = ensure_tag(session, user_id, tag_name, at)
    return add_to_tag(session, user_id, tag.id, [paper_id], at) == 1


def add_to_tag(
    session: Session,
    user_id: int,
    tag_id: int,
    paper_ids: Sequence[str],
    at: datetime | None = None,
) -> int:
    """Save papers into one of the user's tags; how many were not there yet."""
    when = at or _now()
    rows = [
        {"tag_id": tag_id, "paper_id": pid, "user_id": user_id, "added_at": when}
        for pid in dict.fromkeys(paper_ids)
    ]
    return sum(
        _insert_ignore(session, LibraryEntryRow, rows[i : i + _IN_CHUNK])
        for i in range(0, len(rows), _IN_CHUNK)
    )


def remove(session: Session, user_id: int, paper_id: str, tag_id: int | None = None) -> int:
    """Take a paper out of one tag, or (``tag_id`` None) out of all the user's tags; how
    many entries went."""
    stmt = delete(LibraryEntryRow).where(
        LibraryEntryRow.user_id == user_id, LibraryEntryRow.paper_id == paper_id
    )
    if tag_id is not None:
        stmt = stmt.where(LibraryEntryRow.tag_id == tag_id)
    return _rowcount(session.execute(stmt))


def entries(
    session: Session, user_id: int, tag_id: int | None = None
) -> list[tuple[str, datetime]]:
    """(paper id, when it was first saved) of the user's papers, newest first; in one tag
    or, with ``tag_id`` None, in any (each paper once, at its earliest save)."""
    added = func.min(LibraryEntryRow.added_at).label("added")
    stmt = select(LibraryEntryRow.paper_id, added).where(LibraryEntryRow.user_id == user_id)
    if tag_id is not None:
        stmt = stmt.where(LibraryEntryRow.tag_id == tag_id)
    stmt = stmt.group_by(LibraryEntryRow.paper_id).order_by(added.desc(), LibraryEntryRow.paper_id)
    return [(pid, at) for pid, at in session.execute(stmt)]


def saved_ids(session: Session, user_id: int, tag_id: int | None = None) -> list[str]:
    """Ids of the user's saved papers (in one tag, or in any), newest first."""
    return [pid for pid, _ in entries(session, user_id, tag_id)]


def every_library(session: Session) -> list[list[str]]:
    """Each reader's saved papers (any tag, once each), one list per reader with papers: the
    input of the co-saved signal, which only ever reaches a reader in aggregate."""
    stmt = (
        select(LibraryEntryRow.user_id, LibraryEntryRow.paper_id)
        .distinct()
        .order_by(LibraryEntryRow.user_id, LibraryEntryRow.paper_id)
    )
    out: dict[int, list[str]] = {}
    for user_id, paper_id in session.execute(stmt):
        out.setdefault(int(user_id), []).append(paper_id)
    return list(out.values())


def libraries_version(session: Session) -> tuple[int, str]:
    """Changes whenever a paper is saved or removed anywhere (a cache key, one cheap query)."""
    count, latest = session.execute(select(func.count(), func.max(LibraryEntryRow.added_at))).one()
    return int(count or 0), str(latest)


def tags_of(session: Session, user_id: int, paper_ids: Iterable[str]) -> dict[str, list[str]]:
    """The names of the user's tags each of ``paper_ids`` is in (unsaved papers absent)."""
    ids = list(dict.fromkeys(paper_ids))
    out: dict[str, list[str]] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        stmt = (
            select(LibraryEntryRow.paper_id, TagRow.name)
            .join(TagRow, TagRow.id == LibraryEntryRow.tag_id)
            .where(
                LibraryEntryRow.user_id == user_id,
                LibraryEntryRow.paper_id.in_(ids[i : i + _IN_CHUNK]),
            )
            .order_by(func.lower(TagRow.name))
        )
        for pid, name in session.execute(stmt):
            out.setdefault(pid, []).append(name)
    return out


# -- notes -------------------------------------------------------------------------------


def note(session: Session, user_id: int, paper_id: str) -> PaperNoteRow | None:
    return session.get(PaperNoteRow, (user_id, paper_id))


def set_note(
    session: Session, user_id: int, paper_id: str, text: str, at: datetime | None = None
) -> None:
    """Write the user's note on a paper; an empty text deletes it."""
    row = note(session, user_id, paper_id)
    if not text:
        if row is not None:
            session.delete(row)
        return
    if row is None:
        session.add(
            PaperNoteRow(user_id=user_id, paper_id=paper_id, text=text, updated_at=at or _now())
        )
    else:
        row.text, row.updated_at = text, at or _now()


def notes(session: Session, user_id: int, paper_ids: Iterable[str] | None = None) -> dict[str, str]:
    """The user's notes by paper id (on ``paper_ids`` only, if given)."""
    stmt = select(PaperNoteRow.paper_id, PaperNoteRow.text).where(PaperNoteRow.user_id == user_id)
    if paper_ids is not None:
        ids = list(dict.fromkeys(paper_ids))
        out: dict[str, str] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            part = stmt.where(PaperNoteRow.paper_id.in_(ids[i : i + _IN_CHUNK]))
            out.update({pid: text for pid, text in session.execute(part)})
        return out
    return {pid: text for pid, text in session.execute(stmt)}


# -- saved searches ----------------------------------------------------------------------


def saved_searches(session: Session, user_id: int) -> list[SavedSearchRow]:
    """The user's saved searches, oldest first."""
    stmt = (
        select(SavedSearchRow)
        .where(SavedSearchRow.user_id == user_id)
        .order_by(SavedSearchRow.created_at, SavedSearchRow.id)
    )
    return list(session.scalars(stmt))


def saved_search(session: Session, user_id: int, search_id: int) -> SavedSearchRow | None:
    row = session.get(SavedSearchRow, search_id)
    return row if row is not None and row.user_id == user_id else None


def digest_searches(session: Session, user_id: int) -> list[SavedSearchRow]:
    """The user's saved searches that go into their digest."""
    return [s for s in saved_searches(session, user_id) if s.in_digest]


def add_saved_search(
    session: Session,
    user_id: int,
    name: str,
    query: str,
    filters: dict[str, Any],
    *,
    in_digest: bool = False,
    at: datetime | None = None,
) -> SavedSearchRow:
    when = at or _now()
    row = SavedSearchRow(
        user_id=user_id,
        name=name,
        query=query,
        filters=filters,
        created_at=when,
        last_seen_at=when,
        in_digest=in_digest,
    )
    session.add(row)
    session.flush()
    return row


def update_saved_search(
    session: Session,
    user_id: int,
    search_id: int,
    *,
    name: str | None = None,
    in_digest: bool | None = None,
) -> bool:
    row = saved_search(session, user_id, search_id)
    if row is None:
        return False
    if name is not None:
        row.name = name
    if in_digest is not None:
        row.in_digest = in_digest
    return True


def delete_saved_search(session: Session, user_id: int, search_id: int) -> bool:
    result = session.execute(
        delete(SavedSearchRow).where(
            SavedSearchRow.id == search_id, SavedSearchRow.user_id == user_id
        )
    )
    return _rowcount(result) > 0


def touch_saved_search(session: Session, search_id: int, at: datetime | None = None) -> None:
    """The reader has seen the search's matches up to ``at``: newer papers are its "new"."""
    session.execute(
        update(SavedSearchRow)
        .where(SavedSearchRow.id == search_id)
        .values(last_seen_at=at or _now())
    )


# -- import reports ----------------------------------------------------------------------


def record_import(
    session: Session,
    user_id: int,
    *,
    tag_id: int | None,
    filename: str,
    format: str,
    report: list[dict[str, Any]],
    at: datetime | None = None,
) -> LibraryImportRow:
    counts = {
        s: sum(1 for e in report if e.get("status") == s) for s in ("matched", "added", "failed")
    }
    row = LibraryImportRow(
        user_id=user_id,
        tag_id=tag_id,
        filename=filename,
        format=format,
        created_at=at or _now(),
        report=report,
        **counts,
    )
    session.add(row)
    session.flush()
    return row


def import_report(session: Session, user_id: int, import_id: int) -> LibraryImportRow | None:
    row = session.get(LibraryImportRow, import_id)
    return row if row is not None and row.user_id == user_id else None


def imports(session: Session, user_id: int, limit: int = 20) -> list[LibraryImportRow]:
    stmt = (
        select(LibraryImportRow)
        .where(LibraryImportRow.user_id == user_id)
        .order_by(LibraryImportRow.created_at.desc(), LibraryImportRow.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


# -- the whole library of one user -------------------------------------------------------


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def export_library(session: Session, user_id: int) -> dict[str, Any]:
    """Everything the library holds about a user, as JSON-ready data (account export)."""
    tag_rows = tags(session, user_id)
    by_tag: dict[int, list[dict[str, Any]]] = {t.id: [] for t in tag_rows}
    stmt = (
        select(LibraryEntryRow)
        .where(LibraryEntryRow.user_id == user_id)
        .order_by(LibraryEntryRow.added_at)
    )
    for entry in session.scalars(stmt):
        by_tag.setdefault(entry.tag_id, []).append(
            {"paper_id": entry.paper_id, "added_at": _iso(entry.added_at)}
        )
    note_stmt = select(PaperNoteRow).where(PaperNoteRow.user_id == user_id)
    return {
        "tags": [
            {"name": t.name, "created_at": _iso(t.created_at), "papers": by_tag.get(t.id, [])}
            for t in tag_rows
        ],
        "notes": [
            {"paper_id": n.paper_id, "text": n.text, "updated_at": _iso(n.updated_at)}
            for n in session.scalars(note_stmt)
        ],
        "saved_searches": [
            {
                "name": s.name,
                "query": s.query,
                "filters": s.filters,
                "in_digest": s.in_digest,
                "created_at": _iso(s.created_at),
                "last_seen_at": _iso(s.last_seen_at),
            }
            for s in saved_searches(session, user_id)
        ],
        "imports": [
            {
                "filename": i.filename,
                "format": i.format,
                "created_at": _iso(i.created_at),
                "matched": i.matched,
                "added": i.added,
                "failed": i.failed,
            }
            for i in imports(session, user_id, limit=10_000)
        ],
    }


def delete_user_library(session: Session, user_id: int) -> None:
    """Delete every library row of a user (account deletion; not relying on the cascade)."""
    for table in (LibraryEntryRow, PaperNoteRow, SavedSearchRow, LibraryImportRow, TagRow):
        session.execute(delete(table).where(table.user_id == user_id))
