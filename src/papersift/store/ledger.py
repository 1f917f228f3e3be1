"""Digest ledger and sent papers: the queries behind exactly-once digests.

One row of ``digest_ledger`` per (subscriber, period); ``sent_papers`` remembers every paper
mailed to a subscriber. The states and which transition is allowed when are the digest's
business (``papersift.digest.ledger``); this module only runs the statements, each inside
the caller's transaction, so the caller decides what commits together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.store.schema import DigestLedgerRow, SentPaperRow, SubscriberRow

_IN_CHUNK = 500


class RowTaken(Exception):
    """The row was inserted by someone else first (the primary key decided)."""


def _pk(subscriber_id: int, period: str) -> ColumnElement[bool]:
    return (DigestLedgerRow.subscriber_id == subscriber_id) & (DigestLedgerRow.period == period)


def _subscriber_has(subscriber_id: int, status: str) -> ColumnElement[bool]:
    return exists().where(SubscriberRow.id == subscriber_id, SubscriberRow.status == status)


def entries(session: Session, periods: Iterable[str]) -> dict[tuple[int, str], DigestLedgerRow]:
    """The ledger rows of these periods, by (subscriber id, period)."""
    rows = session.scalars(select(DigestLedgerRow).where(DigestLedgerRow.period.in_(periods)))
    return {(r.subscriber_id, r.period): r for r in rows}


def insert_if_subscriber(
    session: Session,
    subscriber_id: int,
    period: str,
    values: Mapping[str, Any],
    *,
    subscriber_status: str,
) -> bool:
    """INSERT the row (attempt 1) in one statement that also checks the subscriber still
    has ``subscriber_status``; False if not. RowTaken if the row exists already."""
    cols = ["subscriber_id", "period", "attempts", *values]
    table = DigestLedgerRow.__table__.c
    src = select(
        literal(subscriber_id),
        literal(period),
        literal(1),
        *[literal(v, type_=table[k].type) for k, v in values.items()],
    ).where(_subscriber_has(subscriber_id, subscriber_status))
    try:
        # RETURNING, not rowcount: psycopg reports -1 for INSERT ... SELECT
        result = session.execute(
            insert(DigestLedgerRow).from_select(cols, src).returning(DigestLedgerRow.subscriber_id)
        )
        return len(result.all()) == 1
    except IntegrityError as exc:
        raise RowTaken(f"ledger row ({subscriber_id}, {period}) exists") from exc


def update_row(
    session: Session,
    subscriber_id: int,
    period: str,
    values: Mapping[str, Any],
    *,
    claimed_by: str | None,
    status: str | None = None,
    subscriber_status: str | None = None,
    count_attempt: bool = False,
) -> bool:
    """UPDATE the row if ``claimed_by`` holds it (None: nobody does), it is in ``status``
    (None: any) and the subscriber has ``subscriber_status`` (None: any); True if it
    changed. Every ledger transition is this one conditional statement."""
    cond = _pk(subscriber_id, period)
    if claimed_by is None:
        cond &= DigestLedgerRow.claimed_by.is_(None)
    else:
        cond &= DigestLedgerRow.claimed_by == claimed_by
    if status is not None:
        cond &= DigestLedgerRow.status == status
    if subscriber_status is not None:
        cond &= _subscriber_has(subscriber_id, subscriber_status)
    changes = dict(values)
    if count_attempt:
        changes["attempts"] = DigestLedgerRow.attempts + 1
    result = session.execute(
        update(DigestLedgerRow)
        .where(cond)
        .values(**changes)
        .returning(DigestLedgerRow.subscriber_id)
    )
    return len(result.all()) == 1


def sent_paper_ids(session: Session, subscriber_id: int, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` were mailed to the subscriber already."""
    unique = list(dict.fromkeys(ids))
    out: set[str] = set()
    conn = session.connection()  # Core, not ORM: this runs once or twice per subscriber
    for i in range(0, len(unique), _IN_CHUNK):
        out.update(
            conn.execute(
                select(SentPaperRow.paper_id).where(
                    SentPaperRow.subscriber_id == subscriber_id,
                    SentPaperRow.paper_id.in_(unique[i : i + _IN_CHUNK]),
                )
            ).scalars()
        )
    return out


def record_sent_papers(session: Session, subscriber_id: int, period: str, ids: list[str]) -> None:
    """Record papers as mailed; already-recorded ones are left alone."""
    if not ids:
        return
    have = sent_paper_ids(session, subscriber_id, ids)
    rows = [
        {"subscriber_id": subscriber_id, "paper_id": p, "period": period}
        for p in dict.fromkeys(ids)
        if p not in have
    ]
    if rows:
        session.execute(insert(SentPaperRow), rows)


def delete_history(session: Session, subscriber_id: int) -> None:
    """Forget a subscriber's ledger rows and sent papers (explicit deletes: the database
    may not enforce ON DELETE CASCADE)."""
    session.execute(delete(SentPaperRow).where(SentPaperRow.subscriber_id == subscriber_id))
    session.execute(delete(DigestLedgerRow).where(DigestLedgerRow.subscriber_id == subscriber_id))


def counts(session: Session) -> dict[str, int]:
    """Ledger rows per state (sent, failed, uncertain, ...), for the operators' metrics."""
    rows = session.execute(
        select(DigestLedgerRow.status, func.count()).group_by(DigestLedgerRow.status)
    )
    return {str(status): int(n) for status, n in rows}
