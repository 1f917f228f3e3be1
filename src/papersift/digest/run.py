"""A digest run: compose and send each due digest exactly once.

The loop is here; the exactly-once record and its states are ``ledger`` (read its docstring
for why a crash never sends a digest twice), what goes into a digest is ``compose`` and how
it is written is ``mail``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from papersift.digest import mail
from papersift.digest.compose import Composer, Digest, period_end, period_key
from papersift.digest.ledger import (
    BOUNCED,
    CLAIMED,
    DONE,
    EMPTY,
    FAILED,
    LEASE,
    PAUSE_AFTER,
    SENDING,
    SENT,
    UNCERTAIN,
    Entry,
    Ledger,
    alive,
    claimer_dead,
    new_claimer,
)
from papersift.digest.smtp import (
    Mailer,
    SmtpAmbiguous,
    SmtpConfig,
    SmtpFatal,
    SmtpPermanent,
    SmtpTemporary,
    SmtpUnavailable,
)
from papersift.digest.subscriptions import CONFIRMED, Subscriber, get_by_email, list_subscribers
from papersift.digest.validation import normalize_email
from papersift.settings import Settings
from papersift.store.db import Database

MAX_ERROR = 2000


@dataclass
class Outcome:
    """What happened to one subscriber's digest in a run."""

    subscriber_id: int
    email: str
    period: str
    status: str  # sent, empty, done, busy, failed, bounced, uncertain, would-send, ...
    papers: int = 0
    error: str | None = None
    attempts: int = 0


@dataclass
class RunReport:
    """A run's outcomes and timings, for the CLI's summary and its exit status."""

    day: date
    dry_run: bool
    outcomes: list[Outcome] = field(default_factory=list)
    aborted: str | None = None
    warnings: list[str] = field(default_factory=list)
    composed: int = 0
    compose_seconds: float = 0.0
    seconds: float = 0.0
    paused: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        """False when an operator should look: aborted, failures left, or uncertain rows."""
        return not (self.aborted or self.count(FAILED) or self.count(UNCERTAIN))

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "aborted": self.aborted,
            "warnings": self.warnings,
            "paused": self.paused,
            "composed": self.composed,
            "seconds": round(self.seconds, 3),
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


def _short(exc: BaseException | str) -> str:
    return str(exc)[:MAX_ERROR]


class DigestRun:
    """One pass over the confirmed subscribers for one day; its options are checked when it
    is created, so a caller (the CLI) can report a bad one before anything runs."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        day: date | None = None,
        dry_run: bool = False,
        rate: float = 0.0,
        retries: int = 3,
        backoff: float = 1.0,
        lease: timedelta = LEASE,
        pause_after: int = PAUSE_AFTER,
        emails: list[str] | None = None,
        retry_uncertain: bool = False,
        mailer: Mailer | None = None,
        composer: Composer | None = None,
        progress: Callable[[Outcome], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.day = day or date.today()
        self.dry_run = dry_run
        self.rate, self.retries, self.backoff = rate, retries, backoff
        self.pause_after = pause_after
        self.emails = self._checked(emails, smtp=mailer is None)
        self.lease = lease
        self.retry_uncertain = retry_uncertain
        self._mailer = mailer
        self._own_mailer = mailer is None
        now = datetime.now(UTC)
        self.composer = composer or Composer(settings, db, now=min(now, period_end(self.day)))
        self.builder = mail.MessageBuilder(settings)
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.claimer = new_claimer()
        self.ledger = Ledger(db, self.claimer, pause_after=pause_after)
        self.report = RunReport(self.day, dry_run)

    def _checked(self, emails: list[str] | None, *, smtp: bool) -> list[str] | None:
        """Refuse a run that cannot work before it touches anything: ValueError naming the
        option or setting (ValidationError for a bad address in ``emails``, SmtpConfigError
        for an unusable SMTP URL when ``smtp``). Returns the normalised ``emails``."""
        limits = (
            ("rate", self.rate, 0),
            ("retries", self.retries, 0),
            ("backoff", self.backoff, 0),
            ("pause after", self.pause_after, 1),
        )
        bad = [
            f"{name} must be >= {low}, got {value}" for name, value, low in limits if value < low
        ]
        if bad:
            raise ValueError("; ".join(bad))
        mail.check_addresses(self.settings)
        if smtp and not self.dry_run:
            SmtpConfig.from_url(self.settings.smtp_url)
        return [normalize_email(e) for e in emails] if emails is not None else None

    def mailer(self) -> Mailer:
        """The run's SMTP connection, opened on the first digest that goes out."""
        if self._mailer is None:
            self._mailer = Mailer(
                SmtpConfig.from_url(self.settings.smtp_url),
                rate=self.rate,
                retries=self.retries,
                backoff=self.backoff,
            )
        return self._mailer

    def _emit(self, outcome: Outcome) -> None:
        self.report.outcomes.append(outcome)
        if self.progress:
            self.progress(outcome)

    def run(self) -> RunReport:
        """Every due digest, subscriber by subscriber; stops early when SMTP is unusable."""
        started = time.perf_counter()
        try:
            with alive(self.claimer):
                subs = list_subscribers(self.db, CONFIRMED, emails=self.emails)
                periods = {period_key(s.frequency, self.day) for s in subs}
                ledger = self.ledger.entries(periods) if subs else {}
                for sub in subs:
                    if self.should_stop():
                        self.report.aborted = "stopped"
                        break
                    period = period_key(sub.frequency, self.day)
                    if not self._one(sub, period, ledger.get((sub.id, period))):
                        break
        finally:
            if self._own_mailer and self._mailer is not None:
                self._mailer.close()
            self.report.warnings.extend(self.composer.warnings)
            self.report.seconds = time.perf_counter() - started
        return self.report

    def _settled(self, sub: Subscriber, period: str, prev: Entry, out: Outcome) -> bool:
        """True if ``prev`` says there is nothing to send now (``out`` then says why)."""
        if prev.status in DONE:
            out.status = "done"
            return True
        if prev.status in (CLAIMED, SENDING) and not claimer_dead(
            prev.claimed_by, prev.claimed_at, datetime.now(UTC), self.lease
        ):
            out.status = "busy"  # another live run is on it
            return True
        if prev.status == SENDING:
            if not self.dry_run:
                self.ledger.uncertain(
                    sub.id,
                    period,
                    prev.claimed_by,
                    prev.paper_ids,
                    "run died after handing the message to SMTP",
                    reader_id=self.composer.readers().account(sub.email),
                )
            out.status, out.error = UNCERTAIN, "a previous run died while sending"
            out.papers = len(prev.paper_ids or [])
            return True
        if prev.status == UNCERTAIN and not self.retry_uncertain:
            out.status, out.error = UNCERTAIN, prev.error
            out.papers = len(prev.paper_ids or [])
            return True
        return False

    def _one(self, sub: Subscriber, period: str, prev: Entry | None) -> bool:
        """Handle one subscriber; False stops the run (SMTP unusable)."""
        out = Outcome(sub.id, sub.email, period, "done")
        if prev is not None and self._settled(sub, period, prev, out):
            self._emit(out)
            return True
        t0 = time.perf_counter()
        if prev is not None and prev.status == UNCERTAIN:  # --retry-uncertain: the same mail
            digest = self.composer.recompose(sub, self.day, list(prev.paper_ids or []))
        else:
            digest = self.composer.compose(sub, self.day)
        self.report.composed += 1
        self.report.compose_seconds += time.perf_counter() - t0
        out.papers = len(digest.paper_ids)
        if digest.empty and not sub.send_empty:
            if self.dry_run:
                out.status = EMPTY
            else:
                claimed = self.ledger.claim(sub.id, period, prev, EMPTY, [], None)
                out.status = EMPTY if claimed else "busy"
            self._emit(out)
            return True
        if self.dry_run:
            out.status = "would-send"
            self._emit(out)
            return True
        msg = self.builder.build(digest)
        msg_id = str(msg["Message-ID"])
        if not self.ledger.claim(sub.id, period, prev, CLAIMED, digest.paper_ids, msg_id):
            out.status = "busy"
            self._emit(out)
            return True
        return self._deliver(digest, msg, out)

    def _deliver(self, digest: Digest, msg: EmailMessage, out: Outcome) -> bool:
        sub_id, period = digest.subscriber.id, digest.period
        try:
            out.attempts = self.mailer().send(
                msg,
                before_data=lambda: self.ledger.sending(sub_id, period),
                data_refused=lambda: self.ledger.refused(sub_id, period),
            )
        except SmtpAmbiguous as exc:
            self.ledger.uncertain(
                sub_id,
                period,
                self.claimer,
                digest.paper_ids,
                _short(exc),
                reader_id=digest.reader_id,
            )
            out.status, out.error = UNCERTAIN, _short(exc)
            self._emit(out)
            return True
        except SmtpPermanent as exc:
            if self.ledger.bounced(sub_id, period, _short(exc)):
                self.report.paused.append(digest.subscriber.email)
            out.status, out.error = BOUNCED, _short(exc)
            self._emit(out)
            return True
        except (SmtpUnavailable, SmtpFatal) as exc:
            self.ledger.failed(sub_id, period, _short(exc))
            out.status, out.error = FAILED, _short(exc)
            self._emit(out)
            self.report.aborted = f"SMTP unusable, run stopped: {exc}"
            return False
        except SmtpTemporary as exc:
            self.ledger.failed(sub_id, period, _short(exc))
            out.status, out.error = FAILED, _short(exc)
            self._emit(out)
            return True
        # Anything else (a database error, Ctrl-C) propagates: a row left "claimed" is
        # provably unsent and retried; one left "sending" is reported as uncertain.
        self.ledger.sent(
            sub_id, period, digest.paper_ids, reader_id=digest.reader_id, marks=digest.marks()
        )
        out.status = SENT
        self._emit(out)
        return True


def run_digests(settings: Settings, db: Database, **options: Any) -> RunReport:
    """Compose and send the digests due on ``day`` (default today); see ``DigestRun``."""
    return DigestRun(settings, db, **options).run()


def preview(
    settings: Settings, db: Database, email: str, day: date | None = None
) -> tuple[Digest, EmailMessage]:
    """(digest, message) for one subscriber, whatever their status; writes nothing.
    ValueError for an unusable sender setting, LookupError for an unknown address."""
    mail.check_addresses(settings)
    sub = get_by_email(db, email)
    if sub is None:
        raise LookupError(f"no subscriber with address {email!r}")
    day = day or date.today()
    now = min(datetime.now(UTC), period_end(day))
    digest = Composer(settings, db, now=now).compose(sub, day)
    return digest, mail.build_message(settings, digest)
