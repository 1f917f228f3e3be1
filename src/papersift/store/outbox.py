"""The mail outbox's SQL: write a mail, claim due ones for delivery, record the outcome.

A sender claims a row by moving it to ``sending`` with a lease in one conditional UPDATE,
so two senders (a web worker and ``papersift mail send``) never deliver the same row; a
sender killed mid-way leaves a lease that expires and the row is claimed again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from papersift.store.schema_jobs import OutboxRow

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
STATUSES = (PENDING, SENDING, SENT, FAILED)


def add(
    session: Session,
    *,
    kind: str,
    recipient: str,
    subject: str,
    message: bytes,
    link: str | None,
    now: datetime,
) -> OutboxRow:
    """A new pending mail, in the caller's transaction (flushed: its id is known)."""
    row = OutboxRow(
        created_at=now,
        kind=kind,
        recipient=recipient,
        subject=subject,
        message=message,
        link=link,
        status=PENDING,
        tries=0,
    )
    session.add(row)
    session.flush()
    return row


def queued_since(session: Session, recipient: str, kinds: tuple[str, ...], since: datetime) -> int:
    """How many mails of these kinds were written for ``recipient`` since ``since``."""
    query = select(func.count(OutboxRow.id)).where(
        OutboxRow.recipient == recipient,
        OutboxRow.kind.in_(kinds),
        OutboxRow.created_at >= since,
    )
    return int(session.scalar(query) or 0)


def _claimable(now: datetime, due_only: bool) -> ColumnElement[bool]:
    waiting: ColumnElement[bool] = OutboxRow.status == PENDING
    if due_only:
        waiting = and_(
            waiting, or_(OutboxRow.next_attempt_at.is_(None), OutboxRow.next_attempt_at <= now)
        )
    abandoned = and_(OutboxRow.status == SENDING, OutboxRow.claimed_until < now)
    return or_(waiting, abandoned)


def claimable_ids(
    session: Session, now: datetime, *, due_only: bool, ids: list[int] | None, limit: int
) -> list[int]:
    """Ids a sender may try to claim now, oldest first."""
    query = select(OutboxRow.id).where(_claimable(now, due_only))
    if ids is not None:
        query = query.where(OutboxRow.id.in_(ids))
    return list(session.scalars(query.order_by(OutboxRow.id).limit(limit)))


def claim(
    session: Session, row_id: int, owner: str, now: datetime, until: datetime, *, due_only: bool
) -> OutboxRow | None:
    """The row, now ``sending`` for ``owner`` until ``until``; None if another sender has it
    or it is no longer waiting."""
    result = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, _claimable(now, due_only))
        .values(status=SENDING, claimed_by=owner, claimed_until=until)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return session.get(OutboxRow, row_id, populate_existing=True)


def finish(
    session: Session,
    row_id: int,
    owner: str,
    *,
    status: str,
    tries: int,
    error: str | None,
    next_attempt_at: datetime | None = None,
    sent_at: datetime | None = None,
) -> bool:
    """Record a delivery attempt's outcome, if ``owner`` still holds the claim."""
    result = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.claimed_by == owner, OutboxRow.status == SENDING)
        .values(
            status=status,
            tries=tries,
            last_error=error,
            next_attempt_at=next_attempt_at,
            sent_at=sent_at,
            claimed_by=None,
            claimed_until=None,
        )
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def listing(session: Session, *, status: str | None = None, limit: int = 200) -> list[OutboxRow]:
    """The newest mails first, optionally of one status."""
    query = select(OutboxRow)
    if status is not None:
        query = query.where(OutboxRow.status == status)
    return list(session.scalars(query.order_by(OutboxRow.id.desc()).limit(limit)))


def counts(session: Session) -> dict[str, int]:
    """Mails per status."""
    rows = session.execute(select(OutboxRow.status, func.count()).group_by(OutboxRow.status))
    return {status: int(n) for status, n in rows}
