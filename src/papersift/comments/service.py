"""What readers may do with comments, and threads as pages show them.

Rules: a signed-in reader comments on any paper and replies to a top-level comment (a reply
to a reply joins the same thread: one level); edits and deletes only their own; an admin
hides or shows any comment. A hidden comment is shown to admins (marked) and to its author
(so they know), and to others as a placeholder only when replies hang under it. The web
layer limits how often an account may post (``web/routes/comments.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from papersift.accounts import Account
from papersift.accounts.export import register_eraser, register_exporter
from papersift.comments.render import MAX_CHARS, render
from papersift.store import comments as comment_store
from papersift.store import papers as paper_store
from papersift.store.db import Database

register_exporter("comments", comment_store.export_comments)
register_eraser("comments", comment_store.delete_user_comments)


class CommentError(ValueError):
    """The comment cannot be posted or changed (the message says why, for the reader)."""


class NotAllowed(CommentError):
    """The reader may not do this to that comment (not theirs, not an admin, gone)."""


@dataclass
class CommentView:
    """A comment as a page shows it."""

    id: int
    author: str
    user_id: int
    html: Markup
    body: str  # the Markdown, for the author's edit form
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    hidden: bool
    mine: bool
    parent_id: int | None = None
    replies: list[CommentView] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author": self.author,
            "html": str(self.html),
            "markdown": self.body if not (self.deleted or self.hidden) or self.mine else "",
            "created_at": self.created_at.isoformat(),
            "edited_at": self.edited_at.isoformat() if self.edited_at else None,
            "deleted": self.deleted,
            "hidden": self.hidden,
            "replies": [r.as_json() for r in self.replies],
        }


def clean_body(body: object) -> str:
    """The Markdown to store: text, not blank, at most ``MAX_CHARS``."""
    if not isinstance(body, str):
        raise CommentError("a comment must be text")
    text = body.replace("\r\n", "\n").replace("\x00", "").strip()
    if not text:
        raise CommentError("the comment is empty")
    if len(text) > MAX_CHARS:
        raise CommentError(f"a comment is at most {MAX_CHARS:,} characters ({len(text):,} given)")
    return text


def _now() -> datetime:
    return datetime.now(UTC)


def post(
    db: Database, account: Account, paper_id: str, body: object, reply_to: int | None = None
) -> int:
    """Add a comment (or a reply); its id. CommentError for bad input, KeyError for an
    unknown paper."""
    text = clean_body(body)
    with db.session() as session:
        if not paper_store.paper_exists(session, paper_id):
            raise KeyError(paper_id)
        parent_id = None
        if reply_to is not None:
            parent = comment_store.get(session, reply_to)
            if parent is None or parent.paper_id != paper_id:
                raise CommentError("the comment you reply to is not under this paper")
            parent_id = parent.parent_id or parent.id  # one level: join the thread
        row = comment_store.add(session, paper_id, account.id, text, _now(), parent_id)
        return int(row.id)


def edit(db: Database, account: Account, comment_id: int, body: object) -> str:
    """Replace the text of one's own comment; the paper id it is under."""
    text = clean_body(body)
    with db.session() as session:
        row = comment_store.get(session, comment_id)
        if row is None or not comment_store.edit(session, comment_id, account.id, text, _now()):
            raise NotAllowed("you can only edit your own comments")
        return row.paper_id


def delete(db: Database, account: Account, comment_id: int) -> str:
    """Delete one's own comment; the paper id it was under."""
    with db.session() as session:
        row = comment_store.get(session, comment_id)
        paper_id = row.paper_id if row is not None else ""
        if not comment_store.delete_own(session, comment_id, account.id, _now()):
            raise NotAllowed("you can only delete your own comments")
        return paper_id


def set_hidden(db: Database, account: Account, comment_id: int, hidden: bool) -> str:
    """An admin hides (or shows) any comment; the paper id."""
    if not account.is_admin:
        raise NotAllowed("only admins hide comments")
    with db.session() as session:
        row = comment_store.get(session, comment_id)
        if row is None:
            raise NotAllowed("there is no such comment")
        comment_store.set_hidden(session, comment_id, account.id, hidden, _now())
        return row.paper_id


def _view(row: Any, author: str, viewer: Account | None) -> CommentView:
    mine = viewer is not None and viewer.id == row.user_id
    hidden = row.hidden_at is not None
    deleted = row.deleted_at is not None
    readable = not deleted and (not hidden or mine or (viewer is not None and viewer.is_admin))
    return CommentView(
        id=row.id,
        author=author if not deleted else "",
        user_id=row.user_id,
        html=render(row.body) if readable else Markup(""),
        body=row.body if readable else "",
        created_at=row.created_at,
        edited_at=row.edited_at,
        deleted=deleted,
        hidden=hidden,
        mine=mine,
        parent_id=row.parent_id,
    )


def thread_of(session: Session, paper_id: str, viewer: Account | None) -> list[CommentView]:
    """Top-level comments oldest first, each with its replies; what ``viewer`` may see."""
    tops: dict[int, CommentView] = {}
    replies: list[CommentView] = []
    for row, author in comment_store.thread(session, paper_id):
        view = _view(row, author, viewer)
        if view.parent_id is None:
            tops[view.id] = view
        else:
            replies.append(view)
    for reply in replies:
        parent = tops.get(reply.parent_id or 0)
        if parent is not None and _visible(reply, viewer):
            parent.replies.append(reply)
    return [c for c in tops.values() if _visible(c, viewer) or c.replies]


def _visible(view: CommentView, viewer: Account | None) -> bool:
    if view.deleted:
        return False
    if view.hidden:
        return view.mine or (viewer is not None and viewer.is_admin)
    return True


def thread(db: Database, paper_id: str, viewer: Account | None) -> list[CommentView]:
    with db.session() as session:
        return thread_of(session, paper_id, viewer)


def counts(session: Session, paper_ids: list[str]) -> dict[str, int]:
    """Visible comments per paper (the count on cards)."""
    return comment_store.counts(session, paper_ids)
