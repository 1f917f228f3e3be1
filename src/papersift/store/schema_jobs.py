"""Tables of the background work: the mail outbox, the daily job's runs, job errors.

They share ``schema.Base`` (imported at the end of ``schema``), so Alembic and the app see
one metadata.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Date, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from papersift.store.schema import Base, UTCDateTime


class OutboxRow(Base):
    """A mail written in the transaction that caused it, delivered later by a sender.

    ``status``: ``pending`` (waiting, or to be retried after ``next_attempt_at``),
    ``sending`` (claimed by a sender until ``claimed_until``), ``sent``, ``failed``
    (refused for good, or temporary failures past the retry budget)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[bytes] = mapped_column(LargeBinary)
    link: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    tries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


class DailyRunRow(Base):
    """One row per day the daily job ran: its steps' states, so a rerun resumes or skips."""

    __tablename__ = "daily_runs"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running, done, failed
    since: Mapped[date | None] = mapped_column(Date)
    owner: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    steps: Mapped[dict] = mapped_column(JSON, default=dict)
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)


class JobErrorRow(Base):
    """The last error of a queued job (procrastinate keeps a job's state, not why it
    failed), so ``papersift jobs`` and ``/admin/jobs`` can say why without the worker's log."""

    __tablename__ = "job_errors"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    task: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


Index("ix_outbox_status", OutboxRow.status, OutboxRow.next_attempt_at)
