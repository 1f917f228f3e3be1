"""Subscribers: sign up (double opt-in), confirm, manage, unsubscribe, list, remove.

States: ``pending`` (signed up, not confirmed: never mailed a digest) -> ``confirmed`` ->
``unsubscribed``; ``paused`` after repeated permanent delivery failures. Signing up again
from ``unsubscribed`` or ``paused`` starts over at ``pending``.

Signing up never reveals whether an address is known (the answer is always "check your
inbox"), and never changes a confirmed subscriber's preferences: only the signed manage
link does that. The owner of an already-confirmed address gets a note with that link.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.digest import mail, tokens
from papersift.digest.validation import (
    Preferences,
    ValidationError,
    clean_preferences,
    normalize_email,
)
from papersift.settings import Settings
from papersift.store.db import Database
from papersift.store.schema import CollectionRow, SubscriberRow

PENDING, CONFIRMED, UNSUBSCRIBED, PAUSED = "pending", "confirmed", "unsubscribed", "paused"
STATUSES = (PENDING, CONFIRMED, UNSUBSCRIBED, PAUSED)
# Web sign-ups mail the same address at most once per this many seconds (per process), so
# the form cannot be used to flood someone's inbox with confirmation requests.
SIGNUP_MAIL_INTERVAL = 600.0


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they are UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Subscriber:
    id: int
    email: str
    topics: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)
    frequency: str = "daily"
    max_papers: int = 20
    send_empty: bool = False
    status: str = PENDING
    created_at: datetime | None = None
    confirmed_at: datetime | None = None
    unsubscribed_at: datetime | None = None
    last_digest_at: datetime | None = None
    failure_count: int = 0
    last_error: str | None = None

    @classmethod
    def from_row(cls, row: SubscriberRow) -> Subscriber:
        return cls(
            id=row.id,
            email=row.email,
            topics=list(row.topics or []),
            collections=list(row.collections or []),
            frequency=row.frequency,
            max_papers=row.max_papers,
            send_empty=bool(row.send_empty),
            status=row.status,
            created_at=as_utc(row.created_at),
            confirmed_at=as_utc(row.confirmed_at),
            unsubscribed_at=as_utc(row.unsubscribed_at),
            last_digest_at=as_utc(row.last_digest_at),
            failure_count=row.failure_count or 0,
            last_error=row.last_error,
        )

    @property
    def preferences(self) -> Preferences:
        return Preferences(
            list(self.topics),
            list(self.collections),
            self.frequency,
            self.max_papers,
            self.send_empty,
        )

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "email": self.email,
            "topics": self.topics,
            "collections": self.collections,
            "frequency": self.frequency,
            "max_papers": self.max_papers,
            "send_empty": self.send_empty,
            "status": self.status,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "confirmed_at": self.confirmed_at.isoformat() if self.confirmed_at else None,
            "last_digest_at": self.last_digest_at.isoformat() if self.last_digest_at else None,
            "failure_count": self.failure_count,
            "last_error": self.last_error,
        }


@dataclass
class SignupResult:
    """What ``subscribe`` did: ``created``, ``pending`` (already waiting for confirmation),
    ``restarted`` (was unsubscribed or paused) or ``already`` (confirmed, left unchanged)."""

    subscriber: Subscriber
    action: str


def check_collections(session: Session, names: list[str]) -> None:
    """ValidationError naming the collections that do not exist."""
    if not names:
        return
    known = set(session.scalars(select(CollectionRow.name).where(CollectionRow.name.in_(names))))
    missing = [n for n in names if n not in known]
    if missing:
        raise ValidationError([f"unknown collection {n!r}" for n in missing])


def _apply(row: SubscriberRow, prefs: Preferences) -> None:
    row.topics = list(prefs.topics)
    row.collections = list(prefs.collections)
    row.frequency = prefs.frequency
    row.max_papers = prefs.max_papers
    row.send_empty = prefs.send_empty


def subscribe(db: Database, email: object, prefs: Preferences) -> SignupResult:
    """Record a sign-up (validated); the caller then sends ``signup_message``."""
    address = normalize_email(email)
    now = datetime.now(UTC)
    for _ in range(2):  # a concurrent sign-up of the same address wins the insert: re-read
        try:
            with db.session() as s:
                check_collections(s, prefs.collections)
                row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == address))
                if row is None:
                    row = SubscriberRow(
                        email=address, status=PENDING, created_at=now, failure_count=0
                    )
                    _apply(row, prefs)
                    s.add(row)
                    s.flush()
                    return SignupResult(Subscriber.from_row(row), "created")
                if row.status == CONFIRMED:
                    return SignupResult(Subscriber.from_row(row), "already")
                action = "pending" if row.status == PENDING else "restarted"
                _apply(row, prefs)
                row.status = PENDING
                row.failure_count = 0
                row.last_error = None
                if action == "restarted":
                    row.created_at = now
                    row.confirmed_at = None
                    row.unsubscribed_at = None
                s.flush()
                return SignupResult(Subscriber.from_row(row), action)
        except IntegrityError:
            continue
    raise ValidationError("could not record the subscription, please try again")


def signup_message(settings: Settings, result: SignupResult):
    """The mail a sign-up triggers: a confirmation link, or a note if already confirmed."""
    sub = result.subscriber
    if result.action == "already":
        return mail.already_message(
            settings,
            sub.email,
            tokens.manage_url(settings, sub.id, sub.email),
            tokens.unsubscribe_url(settings, sub.id, sub.email),
        )
    return mail.confirmation_message(
        settings, sub.email, tokens.confirm_url(settings, sub.id, sub.email)
    )


_recent_lock = threading.Lock()
_recent: dict[str, float] = {}


def should_mail_signup(email: str, interval: float = SIGNUP_MAIL_INTERVAL) -> bool:
    """False if this process mailed this address a sign-up note less than ``interval`` ago."""
    now = time.monotonic()
    with _recent_lock:
        for key in [k for k, t in _recent.items() if now - t > interval]:
            del _recent[key]
        if email in _recent:
            return False
        _recent[email] = now
        return True


def send_signup_mail(settings: Settings, result: SignupResult, *, throttle: bool = False) -> bool:
    """Send the sign-up mail now (one short SMTP session); False if throttled.

    Raises the ``smtp`` errors when the server cannot take it."""
    from papersift.digest.smtp import Mailer, SmtpConfig

    if throttle and not should_mail_signup(result.subscriber.email):
        return False
    msg = signup_message(settings, result)
    with Mailer(SmtpConfig.from_url(settings.smtp_url), retries=2, backoff=0.5) as mailer:
        mailer.send(msg)
    return True


def _by_token(s: Session, settings: Settings, purpose: str, token: object) -> SubscriberRow:
    sub_id, email = tokens.read_token(settings, purpose, token)
    row = s.get(SubscriberRow, sub_id)
    if row is None or row.email != email:
        raise tokens.TokenError("this link belongs to a subscription that no longer exists")
    return row


def subscriber_for_token(
    db: Database, settings: Settings, purpose: str, token: object
) -> Subscriber:
    """The subscriber a signed link names (TokenError if forged, expired or stale)."""
    with db.session() as s:
        return Subscriber.from_row(_by_token(s, settings, purpose, token))


def _confirmable(s: Session, settings: Settings, token: object) -> SubscriberRow:
    row = _by_token(s, settings, tokens.CONFIRM, token)
    if row.status not in (PENDING, CONFIRMED):
        raise tokens.TokenError(
            "this confirmation link is no longer valid "
            "(the subscription was cancelled); please subscribe again"
        )
    return row


def confirmation(db: Database, settings: Settings, token: object) -> Subscriber:
    """What a confirmation link would confirm, changing nothing (TokenError if it cannot):
    the link's page asks for a click, so a mail scanner fetching links confirms no one."""
    with db.session() as s:
        return Subscriber.from_row(_confirmable(s, settings, token))


def confirm(db: Database, settings: Settings, token: object) -> tuple[Subscriber, bool]:
    """Turn a pending subscription on; (subscriber, changed). Idempotent when confirmed."""
    with db.session() as s:
        row = _confirmable(s, settings, token)
        if row.status == CONFIRMED:
            return Subscriber.from_row(row), False
        row.status = CONFIRMED
        row.confirmed_at = datetime.now(UTC)
        row.failure_count = 0
        return Subscriber.from_row(row), True


def unsubscribe(db: Database, settings: Settings, token: object) -> tuple[Subscriber, bool]:
    """Stop all mail to the subscriber; (subscriber, changed). Idempotent."""
    with db.session() as s:
        row = _by_token(s, settings, tokens.UNSUBSCRIBE, token)
        if row.status == UNSUBSCRIBED:
            return Subscriber.from_row(row), False
        row.status = UNSUBSCRIBED
        row.unsubscribed_at = datetime.now(UTC)
        return Subscriber.from_row(row), True


def update_preferences(
    db: Database, settings: Settings, token: object, prefs: Preferences
) -> Subscriber:
    """Save new preferences through a manage link (validated against known collections)."""
    with db.session() as s:
        row = _by_token(s, settings, tokens.MANAGE, token)
        check_collections(s, prefs.collections)
        _apply(row, prefs)
        if row.status == PAUSED:  # saving preferences is a sign of life: try again
            row.status = CONFIRMED
            row.failure_count = 0
        return Subscriber.from_row(row)


def resume(db: Database, settings: Settings, token: object) -> Subscriber:
    """Re-enable an unsubscribed or paused address from its manage page (it was confirmed
    before, and the signed link proves the owner asked)."""
    with db.session() as s:
        row = _by_token(s, settings, tokens.MANAGE, token)
        if row.confirmed_at is None:
            raise tokens.TokenError("this subscription was never confirmed; subscribe again")
        row.status = CONFIRMED
        row.failure_count = 0
        row.unsubscribed_at = None
        return Subscriber.from_row(row)


def get_by_email(db: Database, email: object) -> Subscriber | None:
    address = normalize_email(email)
    with db.session() as s:
        row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == address))
        return Subscriber.from_row(row) if row else None


def list_subscribers(db: Database, status: str | None = None) -> list[Subscriber]:
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    stmt = select(SubscriberRow).order_by(SubscriberRow.id)
    if status:
        stmt = stmt.where(SubscriberRow.status == status)
    with db.session() as s:
        return [Subscriber.from_row(r) for r in s.scalars(stmt)]


def remove(db: Database, subscriber_id: int) -> bool:
    """Delete a subscriber with its ledger and sent-papers history (cascade)."""
    from papersift.store.schema import DigestLedgerRow, SentPaperRow

    with db.session() as s:
        # explicit deletes: do not rely on the database enforcing ON DELETE CASCADE
        s.execute(delete(SentPaperRow).where(SentPaperRow.subscriber_id == subscriber_id))
        s.execute(delete(DigestLedgerRow).where(DigestLedgerRow.subscriber_id == subscriber_id))
        result = s.execute(delete(SubscriberRow).where(SubscriberRow.id == subscriber_id))
        return bool(result.rowcount)


def set_status(db: Database, subscriber_id: int, status: str) -> None:
    """Admin override (e.g. un-pause after fixing a bounce)."""
    if status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    with db.session() as s:
        s.execute(
            update(SubscriberRow)
            .where(SubscriberRow.id == subscriber_id)
            .values(status=status, failure_count=0)
        )


__all__ = [
    "CONFIRMED",
    "PAUSED",
    "PENDING",
    "UNSUBSCRIBED",
    "Preferences",
    "SignupResult",
    "Subscriber",
    "ValidationError",
    "clean_preferences",
    "confirm",
    "subscribe",
    "unsubscribe",
]
