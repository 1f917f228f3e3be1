"""A digest run: compose and send each due digest exactly once, recorded in a ledger.

The ledger (table ``digest_ledger``) has one row per (subscriber, period). A row moves::

    (none) --claim--> claimed --before DATA--> sending --SMTP 250 + commit--> sent
                        |  ^                      |
                        |  +--- server refused ---+   (4xx/5xx reply to the body)
                        +--> failed   (temporary failure after retries: retried next run)
                        +--> bounced  (permanent 5xx: not retried this period)
    (none) ---------> empty      (nothing new and the subscriber wants no empty mail)
    sending (owner dead) --> uncertain   (maybe delivered: reported, never resent blindly)

Why this order. The claim is a committed INSERT on the primary key (or a conditional
UPDATE of a retryable row), so of two concurrent runs exactly one owns a digest; the
claim also checks, in the same statement, that the subscriber is still confirmed. The
row is set to ``sending`` in its own commit right before the message body goes out, and
to ``sent`` -- together with the ``sent_papers`` rows and the subscriber's
``last_digest_at`` -- in one transaction right after the server's 250.

The crash window. A crash (kill -9, power loss) between the server accepting the message
and our final commit leaves ``sending``: the mail was probably delivered, but we cannot
know. The issue demands "none twice", so such rows are never resent automatically: the
next run marks them ``uncertain`` (and records their papers as sent, so they are not
repeated tomorrow either), reports them, and exits non-zero. An operator who checks the
mail log (the ledger keeps the deterministic Message-ID) can resend them with
``papersift digest send --retry-uncertain``. A crash anywhere *before* ``sending`` (while
composing, queueing or waiting in MAIL/RCPT) leaves ``claimed``, which is provably unsent
and is taken over by the next run as soon as its owner is known to be dead: a process id
on this host that no longer exists, or a claim older than the lease (other hosts).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import case, exists, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.digest.compose import (
    Composer,
    Digest,
    MessageBuilder,
    build_message,
    period_end,
    period_key,
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
from papersift.digest.subscriptions import CONFIRMED, PAUSED, Subscriber, as_utc
from papersift.settings import Settings
from papersift.store.db import Database
from papersift.store.schema import DigestLedgerRow, SentPaperRow, SubscriberRow

log = logging.getLogger(__name__)

CLAIMED, SENDING, SENT, FAILED, BOUNCED, EMPTY, UNCERTAIN = (
    "claimed",
    "sending",
    "sent",
    "failed",
    "bounced",
    "empty",
    "uncertain",
)
DONE = (SENT, EMPTY, BOUNCED)
LEASE = timedelta(minutes=15)
PAUSE_AFTER = 3
MAX_ERROR = 2000

_HOST = (socket.gethostname() or "localhost")[:40]
_active_lock = threading.Lock()
_active: set[str] = set()  # claimer ids of runs alive in this process


def new_claimer() -> str:
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:10]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet still "exists": a zombie is dead
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def claimer_dead(
    claimed_by: str | None, claimed_at: datetime | None, now: datetime, lease: timedelta = LEASE
) -> bool:
    """True when the run holding a claim is known to be gone (see the module docstring)."""
    if claimed_at is None or not claimed_by:
        return True
    if now - as_utc(claimed_at) > lease:
        return True
    host, _, rest = claimed_by.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != _HOST or not pid_text.isdigit():
        return False  # another machine: only the lease can tell
    pid = int(pid_text)
    if pid == os.getpid():
        with _active_lock:
            return claimed_by not in _active
    return not _pid_alive(pid)


@dataclass
class Outcome:
    subscriber_id: int
    email: str
    period: str
    status: str  # sent, empty, done, busy, failed, bounced, uncertain, would-send, ...
    papers: int = 0
    error: str | None = None
    attempts: int = 0


@dataclass
class RunReport:
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

    def to_dict(self) -> dict:
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


def _insert_sent(s: Session, subscriber_id: int, period: str, ids: list[str]) -> None:
    """Record papers as mailed; already-recorded ones are left alone."""
    if not ids:
        return
    have = set(
        s.scalars(
            select(SentPaperRow.paper_id).where(
                SentPaperRow.subscriber_id == subscriber_id, SentPaperRow.paper_id.in_(ids)
            )
        )
    )
    rows = [
        {"subscriber_id": subscriber_id, "paper_id": p, "period": period}
        for p in dict.fromkeys(ids)
        if p not in have
    ]
    if rows:
        s.execute(insert(SentPaperRow), rows)


def _short(exc: BaseException | str) -> str:
    return str(exc)[:MAX_ERROR]


class DigestRun:
    """One pass over the confirmed subscribers for one day."""

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
        self.lease = lease
        self.pause_after = max(1, pause_after)
        self.emails = emails
        self.retry_uncertain = retry_uncertain
        self._mailer = mailer
        self._own_mailer = mailer is None
        now = datetime.now(UTC)
        self.composer = composer or Composer(settings, db, now=min(now, period_end(self.day)))
        self.builder = MessageBuilder(settings)
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.claimer = new_claimer()
        self.report = RunReport(self.day, dry_run)

    # -- setup ------------------------------------------------------------------------------
    def _subscribers(self) -> list[Subscriber]:
        stmt = select(SubscriberRow).where(SubscriberRow.status == CONFIRMED)
        if self.emails is not None:
            stmt = stmt.where(SubscriberRow.email.in_(self.emails))
        with self.db.session() as s:
            return [Subscriber.from_row(r) for r in s.scalars(stmt.order_by(SubscriberRow.id))]

    def _ledger(self, periods: set[str]) -> dict[tuple[int, str], DigestLedgerRow]:
        with self.db.session() as s:
            rows = s.scalars(select(DigestLedgerRow).where(DigestLedgerRow.period.in_(periods)))
            return {(r.subscriber_id, r.period): r for r in rows}

    def mailer(self) -> Mailer:
        if self._mailer is None:
            self._mailer = Mailer(
                SmtpConfig.from_url(self.settings.smtp_url),
                rate=self.rate,
                retries=self.retries,
                backoff=self.backoff,
            )
        return self._mailer

    # -- ledger transitions (each its own short transaction) ---------------------------
    @staticmethod
    def _pk(sub_id: int, period: str):
        return (DigestLedgerRow.subscriber_id == sub_id) & (DigestLedgerRow.period == period)

    def _claim(
        self,
        sub: Subscriber,
        period: str,
        prev: DigestLedgerRow | None,
        status: str,
        paper_ids: list[str],
        msg_id: str | None,
    ) -> bool:
        """Own (sub, period) with ``status``; False if another run has it or the subscriber
        stopped being confirmed meanwhile."""
        now = datetime.now(UTC)
        confirmed = exists().where(SubscriberRow.id == sub.id, SubscriberRow.status == CONFIRMED)
        values = {
            "status": status,
            "claimed_by": self.claimer,
            "claimed_at": now,
            "message_id": msg_id,
            "paper_ids": paper_ids,
            "error": None,
        }
        try:
            with self.db.session() as s:
                if prev is None:
                    cols = ["subscriber_id", "period", "attempts", *values]
                    src = select(
                        literal(sub.id),
                        literal(period),
                        literal(1),
                        *[
                            literal(v, type_=DigestLedgerRow.__table__.c[k].type)
                            for k, v in values.items()
                        ],
                    ).where(confirmed)
                    # RETURNING, not rowcount: psycopg reports -1 for INSERT ... SELECT
                    result = s.execute(
                        insert(DigestLedgerRow)
                        .from_select(cols, src)
                        .returning(DigestLedgerRow.subscriber_id)
                    )
                else:
                    cond = self._pk(sub.id, period) & (DigestLedgerRow.status == prev.status)
                    if prev.claimed_by is None:
                        cond &= DigestLedgerRow.claimed_by.is_(None)
                    else:
                        cond &= DigestLedgerRow.claimed_by == prev.claimed_by
                    result = s.execute(
                        update(DigestLedgerRow)
                        .where(cond & confirmed)
                        .values(attempts=DigestLedgerRow.attempts + 1, **values)
                        .returning(DigestLedgerRow.subscriber_id)
                    )
                return len(result.all()) == 1
        except IntegrityError:
            return False

    def _set(self, sub_id: int, period: str, status: str, **extra) -> None:
        with self.db.session() as s:
            s.execute(
                update(DigestLedgerRow)
                .where(self._pk(sub_id, period) & (DigestLedgerRow.claimed_by == self.claimer))
                .values(status=status, **extra)
            )

    def _mark_sent(self, digest: Digest) -> None:
        now = datetime.now(UTC)
        sub = digest.subscriber
        with self.db.session() as s:
            s.execute(
                update(DigestLedgerRow)
                .where(
                    self._pk(sub.id, digest.period) & (DigestLedgerRow.claimed_by == self.claimer)
                )
                .values(status=SENT, sent_at=now, error=None)
            )
            _insert_sent(s, sub.id, digest.period, digest.paper_ids)
            s.execute(
                update(SubscriberRow)
                .where(SubscriberRow.id == sub.id)
                .values(last_digest_at=now, failure_count=0, last_error=None)
            )

    def _mark_bounced(self, digest: Digest, error: str) -> bool:
        """Record a permanent failure; True if the subscriber is now paused."""
        sub = digest.subscriber
        with self.db.session() as s:
            s.execute(
                update(DigestLedgerRow)
                .where(
                    self._pk(sub.id, digest.period) & (DigestLedgerRow.claimed_by == self.claimer)
                )
                .values(status=BOUNCED, error=error)
            )
            fails = SubscriberRow.failure_count + 1
            s.execute(
                update(SubscriberRow)
                .where(SubscriberRow.id == sub.id)
                .values(
                    failure_count=fails,
                    last_error=error,
                    status=_case_pause(fails, self.pause_after),
                )
            )
            row = s.get(SubscriberRow, sub.id)
            return row is not None and row.status == PAUSED

    def _mark_failed(self, digest: Digest, error: str) -> None:
        self._set(digest.subscriber.id, digest.period, FAILED, error=error)
        with self.db.session() as s:
            s.execute(
                update(SubscriberRow)
                .where(SubscriberRow.id == digest.subscriber.id)
                .values(last_error=error)
            )

    def _mark_uncertain(
        self, sub_id: int, period: str, owner: str | None, ids: list[str], error: str
    ) -> bool:
        """sending -> uncertain for a dead owner (or ourselves); papers count as sent."""
        with self.db.session() as s:
            cond = self._pk(sub_id, period) & (DigestLedgerRow.status == SENDING)
            cond &= (
                (DigestLedgerRow.claimed_by == owner)
                if owner
                else DigestLedgerRow.claimed_by.is_(None)
            )
            changed = (
                s.execute(
                    update(DigestLedgerRow).where(cond).values(status=UNCERTAIN, error=error)
                ).rowcount
                == 1
            )
            if changed:
                _insert_sent(s, sub_id, period, list(ids or []))
            return changed

    # -- the loop -------------------------------------------------------------------------
    def _emit(self, outcome: Outcome) -> None:
        self.report.outcomes.append(outcome)
        if self.progress:
            self.progress(outcome)

    def run(self) -> RunReport:
        started = time.perf_counter()
        with _active_lock:
            _active.add(self.claimer)
        try:
            subs = self._subscribers()
            periods = {period_key(s.frequency, self.day) for s in subs}
            ledger = self._ledger(periods) if subs else {}
            for sub in subs:
                if self.should_stop():
                    self.report.aborted = "stopped"
                    break
                period = period_key(sub.frequency, self.day)
                if not self._one(sub, period, ledger.get((sub.id, period))):
                    break
        finally:
            with _active_lock:
                _active.discard(self.claimer)
            if self._own_mailer and self._mailer is not None:
                self._mailer.close()
            self.report.warnings.extend(self.composer.warnings)
            self.report.seconds = time.perf_counter() - started
        return self.report

    def _one(self, sub: Subscriber, period: str, prev: DigestLedgerRow | None) -> bool:
        """Handle one subscriber; False stops the run (SMTP unusable)."""
        out = Outcome(sub.id, sub.email, period, "done")
        now = datetime.now(UTC)
        if prev is not None:
            if prev.status in DONE:
                out.status = "done"
                self._emit(out)
                return True
            if prev.status in (CLAIMED, SENDING) and not claimer_dead(
                prev.claimed_by, prev.claimed_at, now, self.lease
            ):
                out.status = "busy"  # another live run is on it
                self._emit(out)
                return True
            if prev.status == SENDING:
                if not self.dry_run:
                    self._mark_uncertain(
                        sub.id,
                        period,
                        prev.claimed_by,
                        prev.paper_ids,
                        "run died after handing the message to SMTP",
                    )
                out.status, out.error = UNCERTAIN, "a previous run died while sending"
                out.papers = len(prev.paper_ids or [])
                self._emit(out)
                return True
            if prev.status == UNCERTAIN and not self.retry_uncertain:
                out.status, out.error = UNCERTAIN, prev.error
                out.papers = len(prev.paper_ids or [])
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
                out.status = EMPTY if self._claim(sub, period, prev, EMPTY, [], None) else "busy"
            self._emit(out)
            return True
        if self.dry_run:
            out.status = "would-send"
            self._emit(out)
            return True
        msg = self.builder.build(digest)
        if not self._claim(sub, period, prev, CLAIMED, digest.paper_ids, str(msg["Message-ID"])):
            out.status = "busy"
            self._emit(out)
            return True
        return self._deliver(digest, msg, out)

    def _deliver(self, digest: Digest, msg, out: Outcome) -> bool:
        sub_id, period = digest.subscriber.id, digest.period
        try:
            out.attempts = self.mailer().send(
                msg,
                before_data=lambda: self._set(sub_id, period, SENDING),
                data_refused=lambda: self._set(sub_id, period, CLAIMED),
            )
        except SmtpAmbiguous as exc:
            self._mark_uncertain(sub_id, period, self.claimer, digest.paper_ids, _short(exc))
            out.status, out.error = UNCERTAIN, _short(exc)
            self._emit(out)
            return True
        except SmtpPermanent as exc:
            if self._mark_bounced(digest, _short(exc)):
                self.report.paused.append(digest.subscriber.email)
            out.status, out.error = BOUNCED, _short(exc)
            self._emit(out)
            return True
        except (SmtpUnavailable, SmtpFatal) as exc:
            self._mark_failed(digest, _short(exc))
            out.status, out.error = FAILED, _short(exc)
            self._emit(out)
            self.report.aborted = f"SMTP unusable, run stopped: {exc}"
            return False
        except SmtpTemporary as exc:
            self._mark_failed(digest, _short(exc))
            out.status, out.error = FAILED, _short(exc)
            self._emit(out)
            return True
        # Anything else (a database error, Ctrl-C) propagates: a row left "claimed" is
        # provably unsent and retried; one left "sending" is reported as uncertain.
        self._mark_sent(digest)
        out.status = SENT
        self._emit(out)
        return True


def _case_pause(fails, pause_after: int):
    """New status after a permanent failure: paused once failures reach the limit."""
    return case(
        ((SubscriberRow.status == CONFIRMED) & (fails >= pause_after), literal(PAUSED)),
        else_=SubscriberRow.status,
    )


def run_digests(settings: Settings, db: Database, **kwargs) -> RunReport:
    """Compose and send the digests due on ``day`` (default today); see ``DigestRun``."""
    return DigestRun(settings, db, **kwargs).run()


def preview(
    settings: Settings, db: Database, email: str, day: date | None = None
) -> tuple[Digest, object]:
    """(digest, message) for one subscriber, whatever their status; writes nothing."""
    from papersift.digest.subscriptions import get_by_email

    sub = get_by_email(db, email)
    if sub is None:
        raise LookupError(f"no subscriber with address {email!r}")
    day = day or date.today()
    now = min(datetime.now(UTC), period_end(day))
    digest = Composer(settings, db, now=now).compose(sub, day)
    return digest, build_message(settings, digest)
