"""The durable mail outbox: every mail outside the digest ledger goes through it.

A mail (a sign-up confirmation today) is written to the ``outbox`` table in the same
transaction as the change that caused it, so it cannot be lost between the two: a crash
before the commit loses both, after it the mail waits in the table. ``deliver`` then hands
waiting mails to SMTP (the digest ``Mailer``): temporary failures (4xx, refused connection,
timeout) are retried, within the call and in later calls with exponential backoff; a
permanent refusal (5xx to the recipient or the message) marks the mail ``failed`` with the
reason. With ``smtp_url = none`` nothing is sent and mail stays in the outbox, where
``papersift mail outbox`` and ``/admin/outbox`` show it (with the link of a confirmation
mail, so an operator can pass it on).

Delivery is at least once, not exactly once: a sender killed between the server's 250 and
the commit sends that mail again after its claim expires. For confirmation and sign-in
links a duplicate is harmless (the link is the same, confirming twice changes nothing),
and the Message-ID is fixed when the mail is written, so receivers that de-duplicate drop
the copy. A delivered mail is never claimed again.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.mail import POLICY
from papersift.digest.smtp import (
    Mailer,
    SmtpAmbiguous,
    SmtpConfig,
    SmtpFatal,
    SmtpPermanent,
    SmtpTemporary,
    SmtpUnavailable,
    wire_bytes,
)
from papersift.settings import Settings
from papersift.store import outbox as store
from papersift.store.db import Database

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from papersift.store.schema_jobs import OutboxRow

PENDING, SENDING, SENT, FAILED = store.PENDING, store.SENDING, store.SENT, store.FAILED
STATUSES = store.STATUSES
NO_SMTP = ("", "none", "off")
LEASE = timedelta(minutes=5)  # a sender killed mid-delivery loses its claim after this
FIRST_RETRY = 60.0  # seconds after the first failed round; doubles per attempt
MAX_RETRY = 6 * 3600.0
MAX_TRIES = 15  # SMTP attempts before a mail that keeps failing temporarily is given up
MAX_ERROR = 1000
CONFIRM, ALREADY = "confirm", "already"  # kinds of sign-up mail
SIGNUP_KINDS = (CONFIRM, ALREADY)


def smtp_configured(settings: Settings) -> bool:
    """False when ``smtp_url`` says there is no SMTP server: mail then waits in the outbox."""
    return settings.smtp_url.strip().lower() not in NO_SMTP


def where_mail_goes(settings: Settings) -> str:
    """One line for operators: where a mail papersift writes now ends up."""
    if smtp_configured(settings):
        return f"sent over SMTP ({SmtpConfig.from_url(settings.smtp_url).describe()})"
    return "kept in the outbox (no SMTP configured): papersift mail outbox"


def queue(session: Session, msg: EmailMessage, *, kind: str, link: str | None = None) -> int:
    """Write ``msg`` to the outbox in the caller's transaction; its id."""
    recipient = str(msg["To"] or "")
    row = store.add(
        session,
        kind=kind,
        recipient=recipient,
        subject=str(msg["Subject"] or ""),
        message=wire_bytes(msg),
        link=link,
        now=datetime.now(UTC),
    )
    return row.id


def recently_queued(
    session: Session, recipient: str, kinds: tuple[str, ...], within: float
) -> bool:
    """True if a mail of these kinds was written for ``recipient`` in the last ``within`` s
    (a durable throttle shared by every worker and host)."""
    since = datetime.now(UTC) - timedelta(seconds=within)
    return store.queued_since(session, recipient, kinds, since) > 0


@dataclass
class OutboxEntry:
    """One mail as the CLI and the admin page list it."""

    id: int
    kind: str
    to: str
    subject: str
    status: str
    tries: int
    link: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: OutboxRow) -> OutboxEntry:
        return cls(
            row.id,
            row.kind,
            row.recipient,
            row.subject,
            row.status,
            row.tries,
            row.link,
            row.created_at,
            row.next_attempt_at,
            row.sent_at,
            row.last_error,
        )

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "kind": self.kind,
            "to": self.to,
            "subject": self.subject,
            "status": self.status,
            "tries": self.tries,
            "link": self.link,
            "created_at": iso(self.created_at),
            "next_attempt_at": iso(self.next_attempt_at),
            "sent_at": iso(self.sent_at),
            "last_error": self.last_error,
        }


def entries(db: Database, *, status: str | None = None, limit: int = 200) -> list[OutboxEntry]:
    """The newest mails first; ValueError for an unknown status."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    with db.session() as s:
        return [OutboxEntry.from_row(r) for r in store.listing(s, status=status, limit=limit)]


def counts(db: Database) -> dict[str, int]:
    """Mails per status (every status present, zero when none)."""
    with db.session() as s:
        found = store.counts(s)
    return {status: found.get(status, 0) for status in STATUSES}


@dataclass
class DeliveryReport:
    """What one ``deliver`` call did."""

    sent: int = 0
    retry: int = 0
    failed: int = 0
    held: int = 0  # waiting because no SMTP is configured
    stopped: str | None = None  # why the call stopped before the end (server unusable)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "retry": self.retry,
            "failed": self.failed,
            "held": self.held,
            "stopped": self.stopped,
            "errors": self.errors,
        }


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{id(object()):x}"[:128]


def retry_delay(tries: int) -> float:
    """Seconds until the next round after ``tries`` failed attempts: 60 s doubling, 6 h max."""
    return min(FIRST_RETRY * 2 ** max(0, tries - 1), MAX_RETRY)


class OutboxSender:
    """Delivers waiting mails; one SMTP connection for the whole call.

    ``due_only`` respects the backoff schedule (the automatic senders); an operator's
    ``papersift mail send`` tries every waiting mail at once."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        retries: int = 2,
        backoff: float = 0.5,
        max_tries: int = MAX_TRIES,
        mailer: Mailer | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.retries = retries
        self.backoff = backoff
        self.max_tries = max_tries
        self._mailer = mailer
        self.log = log or (lambda _m: None)
        self.owner = _owner()
        self._waits = 0

    def _mail(self) -> Mailer:
        if self._mailer is None:
            self._mailer = Mailer(
                SmtpConfig.from_url(self.settings.smtp_url),
                rate=self.settings.smtp_rate,
                retries=self.retries,
                backoff=self.backoff,
                sleep=self._pause,
            )
        return self._mailer

    def _pause(self, seconds: float) -> None:
        """The Mailer's wait between two attempts: also how attempts are counted."""
        self._waits += 1
        time.sleep(seconds)

    def deliver(
        self, *, ids: list[int] | None = None, due_only: bool = True, limit: int = 500
    ) -> DeliveryReport:
        """Send the waiting mails (only ``ids`` when given); SmtpConfigError for a bad URL."""
        report = DeliveryReport()
        now = datetime.now(UTC)
        with self.db.session() as s:
            candidates = store.claimable_ids(s, now, due_only=due_only, ids=ids, limit=limit)
        if not smtp_configured(self.settings):
            report.held = len(candidates)
            return report
        SmtpConfig.from_url(self.settings.smtp_url)  # a bad URL stops before any claim
        try:
            for row_id in candidates:
                if not self._one(row_id, due_only, report):
                    break
        finally:
            if self._mailer is not None:
                self._mailer.close()
                self._mailer = None
        return report

    def _one(self, row_id: int, due_only: bool, report: DeliveryReport) -> bool:
        """Deliver one mail; False when the server is unusable and the call should stop."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            row = store.claim(s, row_id, self.owner, now, now + LEASE, due_only=due_only)
            if row is None:
                return True  # another sender has it, or it is done
            tries, data = row.tries, bytes(row.message)
        msg = message_from_bytes(data, policy=POLICY)
        assert isinstance(msg, EmailMessage)
        self._waits = 0
        try:
            attempts = self._mail().send(msg)
        except SmtpPermanent as exc:
            self._finish(row_id, FAILED, tries + self._waits + 1, exc)
            report.failed += 1
            report.errors.append(str(exc)[:MAX_ERROR])
            return True
        except (SmtpFatal, SmtpUnavailable) as exc:
            self._retry(row_id, tries + self._waits + 1, exc, report)
            report.stopped = str(exc)[:MAX_ERROR]
            return False
        except (SmtpTemporary, SmtpAmbiguous) as exc:
            self._retry(row_id, tries + self._waits + 1, exc, report)
            return True
        with self.db.session() as s:
            store.finish(
                s, row_id, self.owner, status=SENT, tries=tries + attempts, error=None,
                sent_at=datetime.now(UTC),
            )  # fmt: skip
        report.sent += 1
        return True

    def _retry(self, row_id: int, tries: int, exc: Exception, report: DeliveryReport) -> None:
        if tries >= self.max_tries:
            self._finish(row_id, FAILED, tries, f"gave up after {tries} attempts: {exc}")
            report.failed += 1
        else:
            later = datetime.now(UTC) + timedelta(seconds=retry_delay(tries))
            self._finish(row_id, PENDING, tries, exc, next_attempt_at=later)
            report.retry += 1
        report.errors.append(str(exc)[:MAX_ERROR])
        self.log(f"mail {row_id} not delivered: {exc}")

    def _finish(
        self,
        row_id: int,
        status: str,
        tries: int,
        error: Exception | str,
        next_attempt_at: datetime | None = None,
    ) -> None:
        with self.db.session() as s:
            store.finish(
                s, row_id, self.owner, status=status, tries=tries,
                error=str(error)[:MAX_ERROR], next_attempt_at=next_attempt_at,
            )  # fmt: skip


def deliver(
    settings: Settings,
    db: Database,
    *,
    ids: list[int] | None = None,
    due_only: bool = True,
    **options: Any,
) -> DeliveryReport:
    """Send what is waiting in the outbox; see ``OutboxSender``."""
    return OutboxSender(settings, db, **options).deliver(ids=ids, due_only=due_only)


class SignupMail:
    """``subscribe(..., on_signup=SignupMail(settings))``: writes the sign-up's mail (the
    confirmation link, or the note to an already confirmed address) to the outbox in the
    sign-up's transaction. The same address gets at most one such mail per
    ``interval`` seconds, counted in the table, so every worker and host shares the limit
    and the form cannot be used to flood an inbox. ``id`` is the mail written, if any;
    ``link`` is the confirmation link it carries, for a caller that also prints it."""

    def __init__(self, settings: Settings, *, interval: float | None = None) -> None:
        self.settings = settings
        self.interval = subs.SIGNUP_MAIL_INTERVAL if interval is None else interval
        self.id: int | None = None
        self.link: str | None = None
        self.throttled = False

    def __call__(self, session: Session, result: subs.SignupResult) -> None:
        sub = result.subscriber
        if self.interval and recently_queued(session, sub.email, SIGNUP_KINDS, self.interval):
            self.throttled = True
            return
        if result.action == "already":
            self.id = queue(session, subs.signup_message(self.settings, result), kind=ALREADY)
        else:
            self.link = tokens.confirm_url(self.settings, sub.id, sub.email)
            msg = subs.signup_message(self.settings, result, confirm_link=self.link)
            self.id = queue(session, msg, kind=CONFIRM, link=self.link)
