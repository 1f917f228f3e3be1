"""Tables of what readers tell papersift about papers: recommendation feedback ("not
interested", "more like this"), the papers already sent to a reader, and comments.

Every row belongs to a user (``user_id`` with ``ON DELETE CASCADE``; account deletion also
deletes through :mod:`papersift.store.feedback` and :mod:`papersift.store.comments`).
Registered on ``schema.Base`` (imported at the end of ``schema``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from papersift.store.schema import Base, UTCDateTime

ALL_SCOPE = 0  # ``scope`` of feedback given on the overall "For you" page (not a tag's)


class RecFeedbackRow(Base):
    """One reader's verdict on one recommended paper in one scope: ``dismissed`` (a
    negative: never shown again) or ``more`` (a positive, as if saved there). ``scope`` is
    the tag id, or 0 for the overall page; ``tag_id`` repeats it (NULL for 0) so deleting
    a tag deletes its feedback."""

    __tablename__ = "rec_feedback"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int | None] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # dismissed | more
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReaderSentRow(Base):
    """A paper already sent to a reader (a digest section of any kind): never twice."""

    __tablename__ = "reader_sent"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    via: Mapped[str] = mapped_column(String(64))  # e.g. "digest", "digest:tag:RL"
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CommentRow(Base):
    """A comment under a paper; ``parent_id`` makes it a reply (one level: a reply's parent
    is never itself a reply). ``body`` is the Markdown as written; it is rendered safely
    on display. A deleted comment with replies keeps its row (``deleted_at``, empty body)
    so the thread stays readable; ``hidden_at`` is an admin's decision."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("comments.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    hidden_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    hidden_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


# A paper's thread in order, and the counts on cards: one index range per paper.
Index("ix_comments_paper", CommentRow.paper_id, CommentRow.created_at)
Index("ix_comments_parent", CommentRow.parent_id)
Index("ix_rec_feedback_tag", RecFeedbackRow.tag_id)
