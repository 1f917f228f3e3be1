"""Comments under papers: threads of one level, edits, deletions and admins' hiding.

The store stores; who may do what (own comments, admins) is checked by
:mod:`papersift.comments.service`, which passes the acting user where it matters so a
caller cannot edit someone else's comment by guessing an id.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from papersift.store.schema_accounts import UserRow
from papersift.store.schema_feedback import CommentRow

_IN_CHUNK = 500


def add(
    session: Session,
    paper_id: str,
    user_id: int,
    body: str,
    at: datetime,
    parent_id: int | None = None,
) -> CommentRow:
    row = CommentRow(
        paper_id=paper_id, user_id=user_id, parent_id=parent_id, body=body, created_at=at
    )
    session.add(row)
    session.flush()
    return row


def get(session: Session, comment_id: int) -> CommentRow | None:
    return session.get(CommentRow, comment_id)


def thread(session: Session, paper_id: str) -> list[tuple[CommentRow, str]]:
    """Every comment of a paper, oldest first, with its author's display name (the name,
    else the part of the address before the @)."""
    stmt = (
        select(CommentRow, UserRow.name, UserRow.email)
        .join(UserRow, UserRow.id == CommentRow.user_id)
        .where(CommentRow.paper_id == paper_id)
        .order_by(CommentRow.created_at, CommentRow.id)
    )
    return [(row, name or email.split("@", 1)[0]) for row, name, email in session.execute(stmt)]


def edit(session: Session, comment_id: int, user_id: int, body: str, at: datetime) -> bool:
    """Replace the body of the user's own, live comment."""
    result = session.execute(
        update(CommentRow)
        .where(
            CommentRow.id == comment_id,
            CommentRow.user_id == user_id,
            CommentRow.deleted_at.is_(None),
        )
        .values(body=body, edited_at=at)
    )
    return bool(isinstance(result, CursorResult) and result.rowcount)


def has_replies(session: Session, comment_id: int) -> bool:
    stmt = select(func.count()).where(CommentRow.parent_id == comment_id)
    return bool(session.scalar(stmt))


def delete_own(session: Session, comment_id: int, user_id: int, at: datetime) -> bool:
    """Delete the user's own comment: the row goes, unless replies hang under it (then the
    body is emptied and the row marked deleted, so the replies keep their place)."""
    row = session.get(CommentRow, comment_id)
    if row is None or row.user_id != user_id or row.deleted_at is not None:
        return False
    if has_replies(session, comment_id):
        row.body, row.deleted_at = "", at
    else:
        session.delete(row)
    session.flush()
    return True


def set_hidden(
    session: Session, comment_id: int, admin_id: int, hidden: bool, at: datetime
) -> bool:
    """An admin hides (or shows again) any comment."""
    row = session.get(CommentRow, comment_id)
    if row is None:
        return False
    row.hidden_at, row.hidden_by = (at, admin_id) if hidden else (None, None)
    session.flush()
    return True


def counts(session: Session, paper_ids: Iterable[str]) -> dict[str, int]:
    """Visible comments per paper (papers without any are absent): the count on cards."""
    ids = list(dict.fromkeys(paper_ids))
    out: dict[str, int] = {}
    for i in range(0, len(ids), _IN_CHUNK):
        stmt = (
            select(CommentRow.paper_id, func.count())
            .where(
                CommentRow.paper_id.in_(ids[i : i + _IN_CHUNK]),
                CommentRow.deleted_at.is_(None),
                CommentRow.hidden_at.is_(None),
            )
            .group_by(CommentRow.paper_id)
        )
        out.update({pid: int(n) for pid, n in session.execute(stmt)})
    return out


def export_comments(session: Session, user_id: int) -> list[dict[str, Any]]:
    """The user's comments, JSON-ready (account export)."""
    stmt = (
        select(CommentRow)
        .where(CommentRow.user_id == user_id, CommentRow.deleted_at.is_(None))
        .order_by(CommentRow.created_at)
    )
    return [
        {
            "id": c.id,
            "paper_id": c.paper_id,
            "reply_to": c.parent_id,
            "body": c.body,
            "created_at": c.created_at.isoformat(),
            "edited_at": c.edited_at.isoformat() if c.edited_at else None,
            "hidden": c.hidden_at is not None,
        }
        for c in session.scalars(stmt)
    ]


def delete_user_comments(session: Session, user_id: int) -> None:
    """Delete every comment of a user (account deletion), replies to them included."""
    mine = select(CommentRow.id).where(CommentRow.user_id == user_id)
    session.execute(delete(CommentRow).where(CommentRow.parent_id.in_(mine)))
    session.execute(delete(CommentRow).where(CommentRow.user_id == user_id))
