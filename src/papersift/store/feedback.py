"""Recommendation feedback and "already sent" marks of readers.

Feedback has a scope: a tag's id (given on that tag's "For you" page) or
:data:`~papersift.store.schema_feedback.ALL_SCOPE` (the overall page). A dismissed paper is
never recommended again in any scope; as a negative it teaches the scope it was given in.
Functions never commit: the caller's transaction does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from papersift.store import daily
from papersift.store.schema import PaperRow
from papersift.store.schema_feedback import ALL_SCOPE, ReaderSentRow, RecFeedbackRow

DISMISSED = "dismissed"
MORE = "more"
_IN_CHUNK = 500


def _scope(tag_id: int | None) -> int:
    return ALL_SCOPE if tag_id is None else int(tag_id)


def _known(session: Session, paper_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(p for p in paper_ids if isinstance(p, str) and p))
    out: list[str] = []
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i : i + _IN_CHUNK]
        found = set(session.scalars(select(PaperRow.id).where(PaperRow.id.in_(chunk))))
        out.extend(p for p in chunk if p in found)
    return out


def _set(
    session: Session, user_id: int, paper_id: str, tag_id: int | None, kind: str, at: datetime
) -> bool:
    """Record ``kind`` for the paper in the scope (replacing the other kind); False if the
    paper does not exist or already had this verdict."""
    if not _known(session, [paper_id]):
        return False
    key = (user_id, _scope(tag_id), paper_id)
    row = session.get(RecFeedbackRow, key)
    if row is not None:
        if row.kind == kind:
            return False
        row.kind, row.created_at = kind, at
        return True
    session.add(
        RecFeedbackRow(
            user_id=user_id,
            scope=key[1],
            paper_id=paper_id,
            tag_id=tag_id,
            kind=kind,
            created_at=at,
        )
    )
    session.flush()
    return True


def dismiss(
    session: Session, user_id: int, paper_id: str, tag_id: int | None, at: datetime
) -> bool:
    """ "Not interested": a negative in this scope, and never recommended again."""
    return _set(session, user_id, paper_id, tag_id, DISMISSED, at)


def more_like_this(
    session: Session, user_id: int, paper_id: str, tag_id: int | None, at: datetime
) -> bool:
    """ "More like this": a positive in this scope (weighs as a saved paper there)."""
    return _set(session, user_id, paper_id, tag_id, MORE, at)


def undo(session: Session, user_id: int, paper_id: str, tag_id: int | None) -> bool:
    """Forget the verdict on one paper in one scope."""
    result = session.execute(
        delete(RecFeedbackRow).where(
            RecFeedbackRow.user_id == user_id,
            RecFeedbackRow.scope == _scope(tag_id),
            RecFeedbackRow.paper_id == paper_id,
        )
    )
    return bool(isinstance(result, CursorResult) and result.rowcount)


def _ids(session: Session, user_id: int, kind: str, scope: int | None) -> list[str]:
    stmt = select(RecFeedbackRow.paper_id).where(
        RecFeedbackRow.user_id == user_id, RecFeedbackRow.kind == kind
    )
    if scope is not None:
        stmt = stmt.where(RecFeedbackRow.scope == scope)
    return list(session.scalars(stmt.order_by(RecFeedbackRow.created_at.desc())))


def dismissed_ids(session: Session, user_id: int, tag_id: int | None = None) -> list[str]:
    """Negatives of one scope (``tag_id`` None: the overall page's), newest first."""
    return _ids(session, user_id, DISMISSED, _scope(tag_id))


def all_dismissed_ids(session: Session, user_id: int) -> set[str]:
    """Papers dismissed in any scope: never shown to this reader again."""
    return set(_ids(session, user_id, DISMISSED, None))


def positives(session: Session, user_id: int, tag_id: int | None = None) -> list[str]:
    """ "More like this" papers of one scope, newest first."""
    return _ids(session, user_id, MORE, _scope(tag_id))


def all_positives(session: Session, user_id: int) -> list[str]:
    return list(dict.fromkeys(_ids(session, user_id, MORE, None)))


def reset(session: Session, user_id: int, tag_id: int | None) -> int:
    """Forget every verdict of one scope; how many there were."""
    result = session.execute(
        delete(RecFeedbackRow).where(
            RecFeedbackRow.user_id == user_id, RecFeedbackRow.scope == _scope(tag_id)
        )
    )
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def mark_sent(
    session: Session, user_id: int, paper_ids: Iterable[str], at: datetime, via: str = "digest"
) -> int:
    """Record papers as sent to the reader (how many marks are new). Papers already marked
    keep their first mark; ids of papers that do not exist are skipped. Concurrent senders
    do not fail: the primary key keeps one row (INSERT ... ON CONFLICT DO NOTHING)."""
    ids = _known(session, paper_ids)
    if not ids:
        return 0
    rows: list[dict[str, Any]] = [
        {"user_id": user_id, "paper_id": p, "via": via[:64], "sent_at": at} for p in ids
    ]
    table: Any = ReaderSentRow.__table__
    new = 0
    for i in range(0, len(rows), _IN_CHUNK):
        chunk = rows[i : i + _IN_CHUNK]
        if session.get_bind().dialect.name == "postgresql":
            stmt: Any = pg_insert(table).values(chunk).on_conflict_do_nothing()
        else:
            stmt = sqlite_insert(table).values(chunk).on_conflict_do_nothing()
        new += len(session.execute(stmt.returning(table.c.paper_id)).all())
    return new


def sent_ids(session: Session, user_id: int, paper_ids: Iterable[str] | None = None) -> set[str]:
    """Every paper sent to the reader, or the subset of ``paper_ids`` already sent."""
    base = select(ReaderSentRow.paper_id).where(ReaderSentRow.user_id == user_id)
    if paper_ids is None:
        return set(session.scalars(base))
    ids = list(dict.fromkeys(paper_ids))
    out: set[str] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        out.update(session.scalars(base.where(ReaderSentRow.paper_id.in_(ids[i : i + _IN_CHUNK]))))
    return out


def export_feedback(session: Session, user_id: int) -> dict[str, Any]:
    """The reader's feedback and sent marks, JSON-ready (account export)."""
    feedback = session.scalars(
        select(RecFeedbackRow)
        .where(RecFeedbackRow.user_id == user_id)
        .order_by(RecFeedbackRow.created_at)
    )
    sent = session.scalars(
        select(ReaderSentRow)
        .where(ReaderSentRow.user_id == user_id)
        .order_by(ReaderSentRow.sent_at)
    )
    return {
        "feedback": [
            {
                "paper_id": f.paper_id,
                "kind": f.kind,
                "tag_id": f.tag_id,
                "created_at": f.created_at.isoformat(),
            }
            for f in feedback
        ],
        "sent": [
            {"paper_id": s.paper_id, "via": s.via, "sent_at": s.sent_at.isoformat()} for s in sent
        ],
    }


def delete_user_feedback(session: Session, user_id: int) -> None:
    """Delete every feedback and sent row of a user (account deletion)."""
    session.execute(delete(RecFeedbackRow).where(RecFeedbackRow.user_id == user_id))
    session.execute(delete(ReaderSentRow).where(ReaderSentRow.user_id == user_id))


def papers_in_days(session: Session, start: date, end: date, limit: int) -> list[str]:
    """Ids of the papers listed on days ``start``..``end`` (the "new this week" candidates),
    newest first, at most ``limit``."""
    stmt = (
        select(PaperRow.id)
        .where(daily.in_days(start, end))
        .order_by(PaperRow.first_seen.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
