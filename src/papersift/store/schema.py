"""Database schema (SQLAlchemy 2 declarative). Migrations in ``migrations/`` mirror it.

Lists (authors, categories, links) are JSON columns: they are read with the paper and
never queried on their own, so separate tables would only cost joins.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored in UTC and always read back timezone-aware (UTC).

    SQLite has no time zones: SQLAlchemy stores the wall-clock text and reads it back
    naive, and PostgreSQL answers in the session's time zone. Converting here means code
    above the store compares and subtracts datetimes without caring which database it is
    on. The storage type is ``DateTime(timezone=True)``, as before, so rows written
    earlier read back unchanged. A naive datetime given to the database is taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:  # the common case, once per row on ingest
            return value
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class PaperRow(Base):
    __tablename__ = "papers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    arxiv_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    doi: Mapped[str | None] = mapped_column(String(255), index=True)
    title_key: Mapped[str] = mapped_column(String(255), index=True)
    title: Mapped[str] = mapped_column(Text)
    abstract: Mapped[str] = mapped_column(Text, default="")
    authors: Mapped[list] = mapped_column(JSON, default=list)
    published: Mapped[date | None] = mapped_column(Date, index=True)
    updated: Mapped[date | None] = mapped_column(Date)
    # The daily pages query by it.
    announced: Mapped[date | None] = mapped_column(Date, index=True)
    categories: Mapped[list] = mapped_column(JSON, default=list)
    primary_category: Mapped[str | None] = mapped_column(String(64))
    abs_url: Mapped[str | None] = mapped_column(Text)
    pdf_url: Mapped[str | None] = mapped_column(Text)
    code_urls: Mapped[list] = mapped_column(JSON, default=list)
    comment: Mapped[str | None] = mapped_column(Text)
    has_code: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    sources: Mapped[list] = mapped_column(JSON, default=list)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    # sha1 of title+abstract: embeddings are recomputed only when it changes.
    content_hash: Mapped[str] = mapped_column(String(40))


class CollectionRow(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    origin: Mapped[str] = mapped_column(Text, default="")
    title: Mapped[str] = mapped_column(Text, default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CollectionEntryRow(Base):
    __tablename__ = "collection_entries"

    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    paper_id: Mapped[str] = mapped_column(ForeignKey("papers.id"), index=True)


class EmbeddingRow(Base):
    """Persisted document embeddings, keyed by model, so re-indexing skips unchanged papers."""

    __tablename__ = "embeddings"

    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(40))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class VoteRow(Base):
    __tablename__ = "votes"

    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    visitor_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class PaperViewRow(Base):
    """Views aggregated per paper and day: enough for trending, cheap to store."""

    __tablename__ = "paper_views"

    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class SubscriberRow(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    topics: Mapped[list] = mapped_column(JSON, default=list)
    collections: Mapped[list] = mapped_column(JSON, default=list)
    frequency: Mapped[str] = mapped_column(String(16), default="daily")
    max_papers: Mapped[int] = mapped_column(Integer, default=20)
    send_empty: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending -> confirmed -> unsubscribed; paused after repeated permanent failures.
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class DigestLedgerRow(Base):
    """One row per (subscriber, period): the exactly-once record of a digest."""

    __tablename__ = "digest_ledger"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # claimed, sent, failed, empty
    message_id: Mapped[str | None] = mapped_column(String(255))
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    paper_ids: Mapped[list] = mapped_column(JSON, default=list)


class SentPaperRow(Base):
    """Papers already mailed to a subscriber: never send the same paper twice."""

    __tablename__ = "sent_papers"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    paper_id: Mapped[str] = mapped_column(
        ForeignKey("papers.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(32))


class HarvestStateRow(Base):
    """Where an OAI-PMH or arXiv API harvest stopped, so an interrupted run can resume."""

    __tablename__ = "harvest_state"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    resumption_token: Mapped[str | None] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    records: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


Index("ix_digest_ledger_period", DigestLedgerRow.period)
# A paper's day is announced, else published, else first_seen's date: with this index the
# papers of a range of days, and the newest ones, are three index ranges (store/daily.py).
Index("ix_papers_day", PaperRow.announced, PaperRow.published, PaperRow.first_seen)

# Tables defined in their own modules register on the same Base when this module loads.
from papersift.store import schema_accounts as _schema_accounts  # noqa: E402, F401
from papersift.store import schema_feedback as _schema_feedback  # noqa: E402, F401
from papersift.store import schema_jobs as _schema_jobs  # noqa: E402, F401
from papersift.store import schema_keys as _schema_keys  # noqa: E402, F401
from papersift.store import schema_library as _schema_library  # noqa: E402, F401
from papersift.store import schema_staging as _schema_staging  # noqa: E402, F401
from papersift.store import schema_web as _schema_web  # noqa: E402, F401
