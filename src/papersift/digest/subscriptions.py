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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING

from papersift.digest import mail, tokens
from papersift.digest.validation import (
    MAX_COLLECTIONS,
    MAX_TOPICS,
    Preferences,
    ValidationError,
    clean_preferences,
    normalize_email,
)
from papersift.settings import Settings
from papersift.store import collections as collection_store
from papersift.store import ledger as ledger_store
from papersift.store import subscriptions as store
from papersift.store.db import Database
from papersift.store.schema import SubscriberRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

PENDING, CONFIRMED, UNSUBSCRIBED, PAUSED = "pending", "confirmed", "unsubscribed", "paused"
STATUSES = (PENDING, CONFIRMED, UNSUBSCRIBED, PAUSED)
# Web sign-ups mail the same address at most once per this many seconds (per process), so
# the form cannot be used to flood someone's inbox with confirmation requests.
SIGNUP_MAIL_INTERVAL = 600.0


@dataclass
class Subscriber:
    """A subscriber as the services and pages see it (read from a ``SubscriberRow``)."""

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
            created_at=row.created_at,
            confirmed_at=row.confirmed_at,
            unsubscribed_at=row.unsubscribed_at,
            last_digest_at=row.last_digest_at,
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
    known = collection_store.existing_names(session, names)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValidationError([f"unknown collection {n!r}" for n in missing])


def _fields(prefs: Preferences) -> dict[str, object]:
    """The subscriber columns that hold ``prefs``."""
    return {
        "topics": list(prefs.topics),
        "collections": list(prefs.collections),
        "frequency": prefs.frequency,
        "max_papers": prefs.max_papers,
        "send_empty": prefs.send_empty,
    }


def subscribe(
    db: Database,
    email: object,
    prefs: Preferences,
    *,
    on_signup: Callable[[Session, SignupResult], None] | None = None,
) -> SignupResult:
    """Record a sign-up (validated); the caller then sends ``signup_message``, or
    ``on_signup`` writes it to the outbox in the sign-up's own transaction.

    Signing up again while pending adds the new topics and collections to the stored
    ones (a second submission of a shorter form, e.g. the home page's, keeps them)."""
    address = normalize_email(email)
    now = datetime.now(UTC)
    for _ in range(2):  # a concurrent sign-up of the same address wins the insert: re-read
        try:
            with db.session() as s:
                check_collections(s, prefs.collections)
                row = store.by_email(s, address)
                if row is None:
                    row = store.insert(
                        s,
                        email=address,
                        status=PENDING,
                        created_at=now,
                        failure_count=0,
                        **_fields(prefs),
                    )
                    return _signed_up(
                        s, SignupResult(Subscriber.from_row(row), "created"), on_signup
                    )
                if row.status == CONFIRMED:
                    return _signed_up(
                        s, SignupResult(Subscriber.from_row(row), "already"), on_signup
                    )
                action = "pending" if row.status == PENDING else "restarted"
                if action == "pending":
                    prefs = _kept(row, prefs)
                restart = (
                    {"created_at": now, "confirmed_at": None, "unsubscribed_at": None}
                    if action == "restarted"
                    else {}
                )
                row = store.update_row(
                    s,
                    row,
                    status=PENDING,
                    failure_count=0,
                    last_error=None,
                    **_fields(prefs),
                    **restart,
                )
                return _signed_up(s, SignupResult(Subscriber.from_row(row), action), on_signup)
        except store.AddressTaken:
            continue
    raise ValidationError("could not record the subscription, please try again")


def _kept(row: SubscriberRow, prefs: Preferences) -> Preferences:
    """A pending address's stored topics and collections plus the new ones (new first,
    within the limits)."""

    def merged(new: list[str], old: list[str] | None, limit: int) -> list[str]:
        out = list(dict.fromkeys([*new, *(old or [])]))
        return out[:limit]

    return Preferences(
        merged(prefs.topics, row.topics, MAX_TOPICS),
        merged(prefs.collections, row.collections, MAX_COLLECTIONS),
        prefs.frequency,
        prefs.max_papers,
        prefs.send_empty,
    )


def _signed_up(
    s: Session, result: SignupResult, hook: Callable[[Session, SignupResult], None] | None
) -> SignupResult:
    if hook is not None:
        hook(s, result)
    return result


def signup_message(
    settings: Settings, result: SignupResult, confirm_link: str | None = None
) -> EmailMessage:
    """The mail a sign-up triggers: a confirmation link, or a note if already confirmed.

    ``confirm_link`` is the link to send, when the caller also shows or stores it: a
    token carries the second it was made, so two calls can give two different links."""
    sub = result.subscriber
    if result.action == "already":
        return mail.already_message(
            settings,
            sub.email,
            tokens.manage_url(settings, sub.id, sub.email),
            tokens.unsubscribe_url(settings, sub.id, sub.email),
        )
    link = confirm_link or tokens.confirm_url(settings, sub.id, sub.email)
    return mail.confirmation_message(settings, sub.email, link)


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
    row = store.by_id(s, sub_id)
    if row is None or row.email != email:
        raise tokens.TokenError("this link belongs to a subscription that no longer exists")
    return row


def subscriber_for_token(
    db: Database, settings: Settings, purpose: str, token: object
) -> Subscriber:
    """The subscriber a signed link names (TokenError if forged, expired or stale)."""
    with db.session() as s:
        return Subscriber.from_row(_by_token(s, settings, purpose, token))


def subscriber_for_link(db: Database, settings: Settings, link: str) -> Subscriber:
    """The subscriber an unsubscribe or manage link (or its bare token) names, as an
    operator pastes it from a digest; TokenError if it is neither."""
    token = tokens.token_from_link(link)
    try:
        return subscriber_for_token(db, settings, tokens.UNSUBSCRIBE, token)
    except tokens.TokenError:
        return subscriber_for_token(db, settings, tokens.MANAGE, token)


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
        store.update_row(s, row, status=CONFIRMED, confirmed_at=datetime.now(UTC), failure_count=0)
        return Subscriber.from_row(row), True


def unsubscribe(db: Database, settings: Settings, token: object) -> tuple[Subscriber, bool]:
    """Stop all mail to the subscriber; (subscriber, changed). Idempotent."""
    with db.session() as s:
        row = _by_token(s, settings, tokens.UNSUBSCRIBE, token)
        if row.status == UNSUBSCRIBED:
            return Subscriber.from_row(row), False
        store.update_row(s, row, status=UNSUBSCRIBED, unsubscribed_at=datetime.now(UTC))
        return Subscriber.from_row(row), True


def update_preferences(
    db: Database, settings: Settings, token: object, prefs: Preferences
) -> Subscriber:
    """Save new preferences through a manage link (validated against known collections)."""
    with db.session() as s:
        row = _by_token(s, settings, tokens.MANAGE, token)
        check_collections(s, prefs.collections)
        revive = {"status": CONFIRMED, "failure_count": 0} if row.status == PAUSED else {}
        # saving preferences is a sign of life: a paused address is tried again
        store.update_row(s, row, **_fields(prefs), **revive)
        return Subscriber.from_row(row)


def resume(db: Database, settings: Settings, token: object) -> Subscriber:
    """Re-enable a paused address (paused after failed deliveries) from its manage page.

    An address that unsubscribed is not turned back on by a link: anyone holding an old
    mail could do that. Subscribing again sends a new confirmation (double opt-in)."""
    with db.session() as s:
        row = _by_token(s, settings, tokens.MANAGE, token)
        if row.confirmed_at is None:
            raise tokens.TokenError("this subscription was never confirmed; subscribe again")
        if row.status == UNSUBSCRIBED:
            raise ValidationError(
                "This address unsubscribed. To receive digests again, subscribe on the "
                "subscribe page and confirm the mail we send."
            )
        store.update_row(s, row, status=CONFIRMED, failure_count=0, unsubscribed_at=None)
        return Subscriber.from_row(row)


def get_by_email(db: Database, email: object) -> Subscriber | None:
    """The subscriber with this address (ValidationError if it is not an address)."""
    address = normalize_email(email)
    with db.session() as s:
        row = store.by_email(s, address)
        return Subscriber.from_row(row) if row else None


def list_subscribers(
    db: Database, status: str | None = None, *, emails: list[str] | None = None
) -> list[Subscriber]:
    """Subscribers by id, optionally only one status and only these (normalised) addresses."""
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    with db.session() as s:
        return [
            Subscriber.from_row(r) for r in store.listing(s, status=status or None, emails=emails)
        ]


def remove(db: Database, subscriber_id: int) -> bool:
    """Delete a subscriber with its ledger and sent-papers history."""
    with db.session() as s:
        ledger_store.delete_history(s, subscriber_id)
        return store.delete_row(s, subscriber_id)


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
