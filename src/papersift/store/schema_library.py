"""Tables of readers' libraries: tags (folders), the papers saved in them, private notes,
saved searches and the reports of library imports.

Every row belongs to one user (``user_id`` with ``ON DELETE CASCADE``, and account deletion
also deletes through :mod:`papersift.store.library`). Registered on ``schema.Base``
(imported at the end of ``schema``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from papersift.store.schema import Base, UTCDateTime

DEFAULT_TAG = "Saved"  # where a paper saved without naming a tag goes
MAX_TAG_CHARS = 100
MAX_SEARCH_NAME_CHARS = 200


class TagRow(Base):
    """A reader's named folder of papers."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_tags_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(MAX_TAG_CHARS))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LibraryEntryRow(Base):
    """One paper in one tag. ``user_id`` repeats the tag's owner so "is this paper saved by
    me, and where" is one index lookup (cards show it for every paper on a page)."""

    __tablename__ = "library_entries"

    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PaperNoteRow(Base):
    """A reader's private note on a paper (shown to them alone)."""

    __tablename__ = "paper_notes"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SavedSearchRow(Base):
    """A search a reader keeps: ``query`` plus ``filters`` (the search page's other
    parameters: mode, sort, dates, code, collection, category). New matches are papers
    first seen after ``last_seen_at``; ``in_digest`` puts it in the reader's digest."""

    __tablename__ = "saved_searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(MAX_SEARCH_NAME_CHARS))
    query: Mapped[str] = mapped_column(Text)
    filters: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    in_digest: Mapped[bool] = mapped_column(Boolean, default=False)


class LibraryImportRow(Base):
    """What one import of a BibTeX, RIS or CSL-JSON file did, entry by entry (``report``:
    a list of {"n", "title", "status", "paper_id", "reason"}), kept so the reader can look
    at it again after the upload's redirect."""

    __tablename__ = "library_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    tag_id: Mapped[int | None] = mapped_column(ForeignKey("tags.id", ondelete="SET NULL"))
    filename: Mapped[str] = mapped_column(String(255), default="")
    format: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    matched: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[list] = mapped_column(JSON, default=list)


Index("ix_library_entries_user_paper", LibraryEntryRow.user_id, LibraryEntryRow.paper_id)
