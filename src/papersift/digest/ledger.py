"""The digest ledger: which state a (subscriber, period) is in, and the moves between states.

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
know. No digest may arrive twice, so such rows are never resent automatically: the next
run marks them ``uncertain`` (and records their papers as sent, so they are not repeated
tomorrow either), reports them, and exits non-zero. An operator who checks the mail log
(the ledger keeps the deterministic Message-ID) can resend them with
``papersift digest send --retry-uncertain``. A crash anywhere *before* ``sending`` (while
composing, queueing or waiting in MAIL/RCPT) leaves ``claimed``, which is provably unsent
and is taken over by the next run as soon as its owner is known to be dead: a process id
on this host that no longer exists, or a claim older than the lease (other hosts).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from papersift.digest.subscriptions import CONFIRMED, PAUSED
from papersift.store import feedback as feedback_store
from papersift.store import ledger as store
from papersift.store import subscriptions as subscriber_store
from papersift.store.db import Database
from papersift.store.schema import DigestLedgerRow

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

Entry = DigestLedgerRow  # a row as read at the start of a run

_HOST = (socket.gethostname() or "localhost")[:40]
_active_lock = threading.Lock()
_active: set[str] = set()  # claimer ids of runs alive in this process


def new_claimer() -> str:
    """An id naming this host, this process and one run: enough to tell if it died."""
    return f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:10]}"


@contextmanager
def alive(claimer: str) -> Iterator[None]:
    """Mark a run of this process as alive while it runs (``claimer_dead`` asks)."""
    with _active_lock:
        _active.add(claimer)
    try:
        yield
    finally:
        with _active_lock:
            _active.discard(claimer)


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
    if now - claimed_at > lease:
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


class Ledger:
    """The ledger moves of one run (``claimer``), each in its own short transaction."""

    def __init__(self, db: Database, claimer: str, *, pause_after: int = PAUSE_AFTER) -> None:
        self.db = db
        self.claimer = claimer
        self.pause_after = max(1, pause_after)

    def entries(self, periods: Iterable[str]) -> dict[tuple[int, str], Entry]:
        """The rows of these periods as they are now, by (subscriber id, period)."""
        with self.db.session() as s:
            return store.entries(s, set(periods))

    def claim(
        self,
        sub_id: int,
        period: str,
        prev: Entry | None,
        status: str,
        paper_ids: list[str],
        message_id: str | None,
    ) -> bool:
        """Own (sub, period) with ``status``: a new row, or ``prev`` taken over. False if
        another run has it or the subscriber stopped being confirmed meanwhile."""
        values = {
            "status": status,
            "claimed_by": self.claimer,
            "claimed_at": datetime.now(UTC),
            "message_id": message_id,
            "paper_ids": paper_ids,
            "error": None,
        }
        if prev is not None:
            return self._take_over(sub_id, period, prev, values)
        try:
            with self.db.session() as s:
                return store.insert_if_subscriber(
                    s, sub_id, period, values, subscriber_status=CONFIRMED
                )
        except store.RowTaken:
            return False

    def _take_over(self, sub_id: int, period: str, prev: Entry, values: dict[str, object]) -> bool:
        """Claim a row that is still as ``prev`` was read: retryable (failed, uncertain
        with --retry-uncertain) or the claim of a run known to be dead. Of two runs trying
        at once, the first UPDATE changes the row and the second finds it changed."""
        with self.db.session() as s:
            return store.update_row(
                s,
                sub_id,
                period,
                values,
                claimed_by=prev.claimed_by,
                status=prev.status,
                subscriber_status=CONFIRMED,
                count_attempt=True,
            )

    def _move(self, sub_id: int, period: str, status: str, **values: object) -> None:
        with self.db.session() as s:
            store.update_row(
                s, sub_id, period, {"status": status, **values}, claimed_by=self.claimer
            )

    def sending(self, sub_id: int, period: str) -> None:
        """claimed -> sending: the body goes out next."""
        self._move(sub_id, period, SENDING)

    def refused(self, sub_id: int, period: str) -> None:
        """sending -> claimed: the server answered the body with a refusal, nothing left."""
        self._move(sub_id, period, CLAIMED)

    def sent(
        self,
        sub_id: int,
        period: str,
        paper_ids: list[str],
        *,
        reader_id: int | None = None,
        marks: Sequence[tuple[str, list[str]]] = (),
    ) -> None:
        """sending -> sent, with the papers, the subscriber's last digest and (for a
        subscriber with an account) the reader's sent marks per section, atomically."""
        now = datetime.now(UTC)
        with self.db.session() as s:
            store.update_row(
                s,
                sub_id,
                period,
                {"status": SENT, "sent_at": now, "error": None},
                claimed_by=self.claimer,
            )
            store.record_sent_papers(s, sub_id, period, paper_ids)
            if reader_id is not None:
                _mark_reader(s, reader_id, paper_ids, marks, now)
            subscriber_store.set_values(
                s, sub_id, last_digest_at=now, failure_count=0, last_error=None
            )

    def bounced(self, sub_id: int, period: str, error: str) -> bool:
        """-> bounced (a permanent failure); True if the subscriber is now paused."""
        with self.db.session() as s:
            store.update_row(
                s, sub_id, period, {"status": BOUNCED, "error": error}, claimed_by=self.claimer
            )
            status = subscriber_store.count_failure(
                s, sub_id, error, pause_after=self.pause_after, active=CONFIRMED, paused=PAUSED
            )
            return status == PAUSED

    def failed(self, sub_id: int, period: str, error: str) -> None:
        """-> failed (temporary: the next run retries), the error kept on the subscriber."""
        self._move(sub_id, period, FAILED, error=error)
        with self.db.session() as s:
            subscriber_store.set_values(s, sub_id, last_error=error)

    def uncertain(
        self,
        sub_id: int,
        period: str,
        owner: str | None,
        paper_ids: list[str],
        error: str,
        *,
        reader_id: int | None = None,
    ) -> bool:
        """sending -> uncertain for a dead ``owner`` (or this run); its papers count as sent
        (for the reader's account too). False if the row was no longer that owner's
        ``sending``."""
        with self.db.session() as s:
            changed = store.update_row(
                s,
                sub_id,
                period,
                {"status": UNCERTAIN, "error": error},
                claimed_by=owner or None,
                status=SENDING,
            )
            if changed:
                store.record_sent_papers(s, sub_id, period, list(paper_ids or []))
                if reader_id is not None:
                    _mark_reader(s, reader_id, list(paper_ids or []), (), datetime.now(UTC))
            return changed


def _mark_reader(
    session: Session,
    reader_id: int,
    paper_ids: list[str],
    marks: Sequence[tuple[str, list[str]]],
    at: datetime,
) -> None:
    """Mark what a digest carried as sent to the reader (``reader_sent``, which the For-you
    page and every later digest section skip), each paper with its section's name."""
    for via, ids in marks:
        feedback_store.mark_sent(session, reader_id, ids, at, via)
    feedback_store.mark_sent(session, reader_id, paper_ids, at, "digest")  # any left
