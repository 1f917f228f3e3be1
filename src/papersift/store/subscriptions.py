"""Subscriber repository: the queries behind digest sign-ups, runs and unsubscribes.

Statuses and what may follow what are the digest's business
(``papersift.digest.subscriptions``); these functions store what they are given, inside
the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import CursorResult, case, delete, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.store.schema import SubscriberRow


class AddressTaken(Exception):
    """Another subscriber row has this address (a concurrent sign-up inserted it first)."""


def by_id(session: Session, subscriber_id: int) -> SubscriberRow | None:
    return session.get(SubscriberRow, subscriber_id)


def by_email(session: Session, email: str) -> SubscriberRow | None:
    """The subscriber with this (already normalised) address."""
    return session.scalar(select(SubscriberRow).where(SubscriberRow.email == email))


def listing(
    session: Session, *, status: str | None = None, emails: Sequence[str] | None = None
) -> list[SubscriberRow]:
    """Subscribers by id, optionally only those in ``status`` and with these addresses."""
    stmt = select(SubscriberRow).order_by(SubscriberRow.id)
    if status is not None:
        stmt = stmt.where(SubscriberRow.status == status)
    if emails is not None:
        stmt = stmt.where(SubscriberRow.email.in_(emails))
    return list(session.scalars(stmt))


def insert(session: Session, **values: Any) -> SubscriberRow:
    """A new subscriber row (flushed: its id is known). AddressTaken if the address is
    taken, e.g. by a concurrent sign-up; the transaction must then be rolled back."""
    row = SubscriberRow(**values)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise AddressTaken(str(values.get("email"))) from exc
    return row


def update_row(session: Session, row: SubscriberRow, **values: Any) -> SubscriberRow:
    """Change a subscriber read in this session; returns it, changed and flushed."""
    for name, value in values.items():
        if not hasattr(SubscriberRow, name):
            raise AttributeError(f"subscribers has no column {name!r}")
        setattr(row, name, value)
    session.flush()
    return row


def set_values(session: Session, subscriber_id: int, **values: Any) -> None:
    """UPDATE one subscriber without reading it first (the hot path of a digest run)."""
    session.execute(update(SubscriberRow).where(SubscriberRow.id == subscriber_id).values(**values))


def count_failure(
    session: Session,
    subscriber_id: int,
    error: str,
    *,
    pause_after: int,
    active: str,
    paused: str,
) -> str | None:
    """One more permanent failure in a row: an ``active`` subscriber whose count reaches
    ``pause_after`` becomes ``paused``, in the same statement. Returns the new status."""
    fails = SubscriberRow.failure_count + 1
    session.execute(
        update(SubscriberRow)
        .where(SubscriberRow.id == subscriber_id)
        .values(
            failure_count=fails,
            last_error=error,
            status=case(
                ((SubscriberRow.status == active) & (fails >= pause_after), literal(paused)),
                else_=SubscriberRow.status,
            ),
        )
    )
    return session.scalar(select(SubscriberRow.status).where(SubscriberRow.id == subscriber_id))


def delete_row(session: Session, subscriber_id: int) -> bool:
    """Delete one subscriber (its history first: ``store.ledger.delete_history``)."""
    result = session.execute(delete(SubscriberRow).where(SubscriberRow.id == subscriber_id))
    return bool(isinstance(result, CursorResult) and result.rowcount)
