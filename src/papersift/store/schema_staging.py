"""Tables of a staged ingest: a file's merged rows wait here until the whole file is read.

An ingest of one file stages its rows in short transactions (so web writes get through
between them), then publishes them into ``papers`` in short chunks that can be undone
until the file is done. ``ingest_batches``
holds at most one row (``lane`` is unique): ingests run one at a time, so merging a file
against ``papers`` plus its own staged rows stays exact. Registered on ``schema.Base``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from papersift.store.schema import Base, PaperRow, UTCDateTime

# A batch is "staging" while its file is read and merged (nothing in papers changes),
# "publishing" while its rows move into papers chunk by chunk (each moved row keeps the
# version it replaced), "undoing" while a failed or interrupted publish is reverted, and
# "done" once the file is in (its commit point); then its staged rows are cleared.
STAGING = "staging"
PUBLISHING = "publishing"
UNDOING = "undoing"
DONE = "done"

# What a staged row is: to be published, published (the paper id is in papers now), or
# the papers row a published one replaced (kept until the batch is done, for undo).
TO_PUBLISH = 0
PUBLISHED = 1
PRIOR = 2


class IngestBatchRow(Base):
    """The one ingest in progress: whose it is, how far it got, and its collection."""

    __tablename__ = "ingest_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lane: Mapped[int] = mapped_column(Integer, unique=True, default=1)
    source: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(255))  # host:pid of the ingesting process
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # {"name", "origin", "title", "order"} of the collection a listing page makes
    collection: Mapped[Any | None] = mapped_column(JSON, nullable=True)


def _paper_columns() -> list[Column]:
    """Copies of every papers column (same types and nullability), without its keys."""
    papers = PaperRow.__table__
    return [Column(c.name, c.type, nullable=c.nullable) for c in papers.columns]


staged_papers = Table(
    "ingest_staged",
    Base.metadata,
    Column(
        "batch_id",
        Integer,
        ForeignKey("ingest_batches.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("phase", Integer, nullable=False),
    *_paper_columns(),
    PrimaryKeyConstraint("batch_id", "phase", "id"),
)
Index("ix_ingest_staged_arxiv", staged_papers.c.batch_id, staged_papers.c.arxiv_id)
Index("ix_ingest_staged_doi", staged_papers.c.batch_id, staged_papers.c.doi)
Index("ix_ingest_staged_title", staged_papers.c.batch_id, staged_papers.c.title_key)
